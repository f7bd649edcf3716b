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
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

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


def run_bulk(base_url, filename, content, params=None):
    """Runs a bulk job and returns its stamp table (the STAMPS HDU)."""
    return Table.read(io.BytesIO(run_bulk_bytes(base_url, filename, content, params)),
                      format="fits", hdu="STAMPS")


def run_bulk_bytes(base_url, filename, content, params=None):
    """Runs a bulk job (SIZE unless `params` says otherwise) and returns its stamps file."""
    data = {"UPLOAD": "cat,param:cat", "PHASE": "RUN"}
    data.update(params if params is not None else {"SIZE": str(SIZE)})
    r = requests.post(
        f"{base_url}/bulk",
        data=data,
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
    return stamps.content


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


def test_radius_and_per_row_sizes_give_each_stamp_its_own_shape(skycut, positions):
    """RADIUS cuts the smallest rectangle of pixels that holds the circle, exactly as a SODA
    CIRCLE cutout of the same position does, and a row's own size or radius wins over the
    request's. The stamp table then holds each stamp as a variable-length array beside its
    NX and NY; the multi-extension file holds the same stamps as its HDUs."""
    image = sorted(skycut.demo_dir.glob("*.fits"))[0]
    with fits.open(image) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.data is not None)
        data = hdu.data.astype(np.float64)
        wcs = WCS(hdu.header).celestial
    scale = float(np.mean(proj_plane_pixel_scales(wcs)))
    frame = positions.head(6).copy()
    # Over the image's corner: a radius stamp is clipped there, a size stamp padded with NaN.
    corner = wcs.pixel_to_world(1.5, 2.0)
    for ra, dec in [(corner.ra.deg, corner.dec.deg)] * 2:
        frame.loc[len(frame)] = {"name": "corner", "ra": ra, "dec": dec}
    frame["size"] = [np.nan, 12, np.nan, np.nan, 7, np.nan, 10, np.nan]
    frame["radius"] = [np.nan, np.nan, 9 * scale, np.nan, np.nan, 2.5 * scale, np.nan, np.nan]
    default_radius = 5.3 * scale
    catalogue = frame.to_csv(index=False).encode()
    params = {"RADIUS": repr(default_radius)}
    raw = run_bulk_bytes(skycut.base_url, "cat.csv", catalogue, params)
    table = Table.read(io.BytesIO(raw), format="fits", hdu="STAMPS")
    images = Table.read(io.BytesIO(raw), format="fits", hdu="IMAGES")
    assert list(table["ROW"]) == list(range(len(frame)))
    shapes = set()
    for row in table:
        n = row["ROW"]
        ra, dec = frame["ra"][n], frame["dec"][n]
        stamp = np.asarray(row["STAMP"]).reshape(row["NY"], row["NX"])
        shapes.add(stamp.shape)
        if not np.isnan(frame["size"][n]):
            size = int(frame["size"][n])
            px, py = wcs.world_to_pixel_values(ra, dec)
            expected = Cutout2D(data, (float(px), float(py)), size, mode="partial",
                                fill_value=np.nan).data
        else:
            radius = frame["radius"][n] if not np.isnan(frame["radius"][n]) else default_radius
            cutout = requests.get(f"{skycut.base_url}/sync", params={
                "ID": images["ID"][row["IMAGE"]].strip(),
                "CIRCLE": f"{float(ra)!r} {float(dec)!r} {float(radius)!r}",
            }, timeout=HTTP_TIMEOUT)
            assert cutout.status_code == 200, cutout.text
            with fits.open(io.BytesIO(cutout.content)) as hdul:
                expected = next(h for h in hdul if h.data is not None).data.astype(np.float64)
        assert stamp.shape == expected.shape, f"row {n}"
        np.testing.assert_array_equal(stamp, expected.astype(np.float32), err_msg=f"row {n}")
    assert len(shapes) > 3, shapes
    # The corner row of the request's RADIUS is clipped, not padded.
    corner_stamp = np.asarray(table["STAMP"][7])
    assert np.isfinite(corner_stamp).all()

    mef = run_bulk_bytes(skycut.base_url, "cat.csv", catalogue,
                         dict(params, RESPONSEFORMAT="application/fits"))
    with fits.open(io.BytesIO(mef)) as hdul:
        hdus = [h for h in hdul if h.data is not None]
        assert len(hdus) == len(table)
        for h, row in zip(hdus, table):
            assert h.header["SKYROW"] == row["ROW"]
            np.testing.assert_array_equal(
                h.data, np.asarray(row["STAMP"]).reshape(row["NY"], row["NX"]))
