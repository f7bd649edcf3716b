"""Bulk cutouts from catalogues written by astronomers' own tools.

Why this file exists: a bulk catalogue comes from whatever a user's pipeline
writes, so the same positions written by astropy (VOTable, TABLEDATA and
BINARY2), by pandas (CSV) and by pyarrow (Parquet, snappy by default) must
give the same stamp table, and that table must open with astropy's
``Table.read`` and stack into an (N, SIZE, SIZE) numpy array: the promise of
issue 15. It runs against the session's ``skycut serve --demo`` server.
"""

import io
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

HTTP_TIMEOUT = 60
SIZE = 16
N = 20


@pytest.fixture(scope="module")
def positions(skycut):
    """N positions well inside the first demo image, once the sky index has located it."""
    image = sorted(skycut.demo_dir.glob("*.fits"))[0]
    with fits.open(image) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.data is not None)
        ny, nx = hdu.data.shape[-2:]
        wcs = WCS(hdu.header).celestial
    rng = np.random.default_rng(15)
    margin = SIZE
    xs = rng.uniform(margin, nx - margin, N)
    ys = rng.uniform(margin, ny - margin, N)
    sky = wcs.pixel_to_world(xs, ys)
    ra, dec = sky.ra.deg, sky.dec.deg
    deadline = time.monotonic() + 60
    while "<TR>" not in requests.get(
        f"{skycut.base_url}/sia/query",
        params={"POS": f"CIRCLE {ra[0]} {dec[0]} 0.001"},
        timeout=HTTP_TIMEOUT,
    ).text:
        assert time.monotonic() < deadline, "the sky index never located the demo image"
        time.sleep(0.2)
    return pd.DataFrame({"name": [f"src{n}" for n in range(N)], "ra": ra, "dec": dec})


def run_bulk(base_url, filename, content):
    r = requests.post(
        f"{base_url}/bulk",
        data={"UPLOAD": "cat,param:cat", "SIZE": str(SIZE), "PHASE": "RUN"},
        files={"cat": (filename, content)},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 303, r.text
    job = r.headers["Location"]
    deadline = time.monotonic() + 120
    while (phase := requests.get(f"{job}/phase", timeout=HTTP_TIMEOUT).text) not in (
        "COMPLETED",
        "ERROR",
        "ABORTED",
    ):
        assert time.monotonic() < deadline, f"{filename}: still {phase}"
        requests.get(job, params={"WAIT": "5", "PHASE": phase}, timeout=HTTP_TIMEOUT)
    assert phase == "COMPLETED", requests.get(f"{job}/error", timeout=HTTP_TIMEOUT).text
    stamps = requests.get(f"{job}/results/stamps", timeout=HTTP_TIMEOUT)
    assert stamps.status_code == 200, stamps.text
    return Table.read(io.BytesIO(stamps.content), format="fits", hdu="STAMPS")


def votable_bytes(frame, tabledata_format):
    out = io.BytesIO()
    Table.from_pandas(frame).write(out, format="votable", tabledata_format=tabledata_format)
    return out.getvalue()


def parquet_bytes(frame):
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out)
    return out.getvalue()


def test_catalogues_from_astropy_pandas_and_pyarrow_give_the_same_stamps(skycut, positions):
    catalogues = {
        "astropy VOTable TABLEDATA": ("cat.vot", votable_bytes(positions, "tabledata")),
        "astropy VOTable BINARY2": ("cat.vot", votable_bytes(positions, "binary2")),
        "pandas CSV": ("cat.csv", positions.to_csv(index=False).encode()),
        "pyarrow Parquet": ("cat.parquet", parquet_bytes(positions)),
    }
    assert b"<BINARY2>" in catalogues["astropy VOTable BINARY2"][1]
    assert catalogues["pyarrow Parquet"][1][:4] == b"PAR1"
    tables = {what: run_bulk(skycut.base_url, *file) for what, file in catalogues.items()}
    reference = tables["pandas CSV"]
    assert sorted(reference["ROW"]) == list(range(N))
    cube = np.asarray(reference["STAMP"])
    assert cube.shape == (N, SIZE, SIZE)
    assert np.isfinite(cube).all(), "every position is well inside the image"
    for what, table in tables.items():
        assert list(table["ROW"]) == list(reference["ROW"]), what
        stack = np.stack(list(table["STAMP"]))
        assert stack.shape == (N, SIZE, SIZE), what
        assert np.array_equal(stack, cube), what


@pytest.mark.parametrize("tabledata_format", ["tabledata", "binary2"])
def test_an_astropy_votable_whose_positions_are_known_only_by_ucd_is_cut(
    skycut, positions, tabledata_format
):
    table = Table.from_pandas(positions.rename(columns={"ra": "alpha", "dec": "delta"}))
    table["alpha"].meta["ucd"] = "pos.eq.ra;meta.main"
    table["delta"].meta["ucd"] = "pos.eq.dec;meta.main"
    # float32 positions: any numeric type is a position.
    table["delta"] = table["delta"].astype(np.float32)
    out = io.BytesIO()
    table.write(out, format="votable", tabledata_format=tabledata_format)
    assert b'ucd="pos.eq.ra;meta.main"' in out.getvalue()
    stamps = run_bulk(skycut.base_url, "cat.vot", out.getvalue())
    assert sorted(stamps["ROW"]) == list(range(N))
    assert np.asarray(stamps["STAMP"]).shape == (N, SIZE, SIZE)
