"""SIZE stamps against astropy's Cutout2D, projection by projection.

Why this file exists: stamps of a fixed size are made to be stacked (a light
curve's epochs, a training set), so each one must hold exactly the pixels
astropy's ``Cutout2D(mode="partial", fill_value=nan)`` gives for the same sky
position, NaN where it hangs over the image edge, and carry a WCS that maps
each of its pixels to the sky position of the source pixel it came from.
This suite writes TAN, TAN-SIP, SIN and ZEA images with astropy, cuts stamps
through a real ``skycut serve`` at positions inside, near and over each edge,
and checks both with astropy's own WCS.
"""

import io

import numpy as np
import pytest
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

from conftest import running_skycut
from test_wcs_correctness import SIP, header

HTTP_TIMEOUT = 60
REPOSITORY = "stamps"
NX, NY = 120, 100
SIZES = [16, 21]

IMAGES = {
    "tan": header("TAN", NX, NY, (150.0, 2.0), 2 / 3600),
    "tansip": header("TAN-SIP", NX, NY, (150.0, 2.0), 2 / 3600, extra=SIP),
    "sin": header("SIN", NX, NY, (30.0, -40.0), 2 / 3600, rotation_deg=20.0),
    "zea": header("ZEA", NX, NY, (0.0, 60.0), 2 / 3600, matrix="cd", rotation_deg=-15.0),
}

# 0-based pixel positions: inside, and over each edge and corner. The fractions
# keep every position well away from a pixel boundary, where astropy's and
# Skycut's (both wcslib) transformations could round to different pixels.
SPOTS = [(60.3, 50.2), (2.2, 50.4), (117.7, 3.3), (40.4, 98.6), (-3.3, -4.2), (121.4, 101.7)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    images = tmp_path_factory.mktemp("stamp-images")
    for name, h in IMAGES.items():
        rng = np.random.default_rng(len(name))
        data = rng.normal(100.0, 10.0, (NY, NX)).astype(np.float32)
        fits.PrimaryHDU(data=data, header=h).writeto(images / f"{name}.fits")
    data_dir = tmp_path_factory.mktemp("stamp-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as s:
        yield s, images


def stamp(base_url, image, ra, dec, size):
    r = requests.get(
        f"{base_url}/sync",
        params={"ID": f"butler://{REPOSITORY}/{image}", "CIRCLE": f"{ra} {dec} 0.0001",
                "SIZE": str(size)},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 200, r.text
    with fits.open(io.BytesIO(r.content)) as hdul:
        return hdul[1].data.copy(), hdul[1].header.copy()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_stamps_are_astropys_cutout2d_with_the_same_wcs(server, image, size):
    s, images = server
    with fits.open(images / f"{image}.fits") as hdul:
        data, source_header = hdul[0].data, hdul[0].header
        source_wcs = WCS(source_header)
        for x, y in SPOTS:
            sky = source_wcs.pixel_to_world(x, y)
            ra, dec = sky.ra.deg, sky.dec.deg
            pixels, h = stamp(s.base_url, image, ra, dec, size)
            assert pixels.shape == (size, size)
            # astropy places the stamp from its own inverse of the WCS.
            px, py = source_wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
            expected = Cutout2D(data, (float(px), float(py)), size, mode="partial",
                                fill_value=np.nan).data
            np.testing.assert_array_equal(pixels, expected, err_msg=f"{image} at ({x}, {y})")
            blanks = np.isnan(pixels).sum()
            inside = 0 <= x - size / 2 and x + size / 2 < NX - 1 and 0 <= y - size / 2 \
                and y + size / 2 < NY - 1
            assert (blanks == 0) == inside, f"{image} at ({x}, {y}): {blanks} blanks"
            # The stamp's WCS puts each pixel where its source pixel is.
            stamp_wcs = WCS(h)
            x0, y0 = h["SKYCX0"] - 1, h["SKYCY0"] - 1
            jj, ii = np.mgrid[0:size:5, 0:size:5]
            a = stamp_wcs.pixel_to_world(ii, jj)
            b = source_wcs.pixel_to_world(ii + x0, jj + y0)
            assert np.all(a.separation(b).deg < 1e-7), f"{image} at ({x}, {y})"


def test_stamps_of_many_positions_stack(server):
    s, images = server
    with fits.open(images / "tan.fits") as hdul:
        source_wcs = WCS(hdul[0].header)
    cube = []
    for x, y in SPOTS:
        sky = source_wcs.pixel_to_world(x, y)
        pixels, _ = stamp(s.base_url, "tan", sky.ra.deg, sky.dec.deg, 21)
        cube.append(pixels)
    assert np.stack(cube).shape == (len(SPOTS), 21, 21)


@pytest.mark.parametrize("image", ["tan", "tansip"])
def test_a_stamp_table_reads_with_astropy_and_stacks_into_cutout2d_stamps(server, image):
    s, images = server
    size = 16
    with fits.open(images / f"{image}.fits") as hdul:
        data, source_header = hdul[0].data.copy(), hdul[0].header.copy()
    source_wcs = WCS(source_header)
    sky = [source_wcs.pixel_to_world(x, y) for x, y in SPOTS]
    params = [("ID", f"butler://{REPOSITORY}/{image}"), ("SIZE", str(size)),
              ("RESPONSEFORMAT", "application/fits;content=stamp-table")]
    params += [("CIRCLE", f"{c.ra.deg} {c.dec.deg} 0.0001") for c in sky]
    r = requests.get(f"{s.base_url}/sync", params=params, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/fits;content=stamp-table"
    table = Table.read(io.BytesIO(r.content), format="fits", hdu="STAMPS")
    sources = Table.read(io.BytesIO(r.content), format="fits", hdu="IMAGES")
    stamps = np.asarray(table["STAMP"])
    assert stamps.shape == (len(SPOTS), size, size)
    assert list(table["ROW"]) == list(range(len(SPOTS)))
    assert list(sources["ID"]) == [f"butler://{REPOSITORY}/{image}"]
    for n, row in enumerate(table):
        px, py = source_wcs.world_to_pixel(sky[n])
        expected = Cutout2D(data, (float(px), float(py)), size, mode="partial",
                            fill_value=np.nan).data
        np.testing.assert_array_equal(stamps[n], expected, err_msg=f"row {n}")
        assert abs(row["X"] - 1 - px) < 1e-3 and abs(row["Y"] - 1 - py) < 1e-3
        # The stamp's WCS: its image's, with the row's reference pixel.
        h = fits.Header.fromstring(sources["WCS"][row["IMAGE"]])
        h["CRPIX1"], h["CRPIX2"] = row["CRPIX1"], row["CRPIX2"]
        stamp_wcs = WCS(h)
        x0 = source_header["CRPIX1"] - row["CRPIX1"]
        y0 = source_header["CRPIX2"] - row["CRPIX2"]
        jj, ii = np.mgrid[0:size:5, 0:size:5]
        a = stamp_wcs.pixel_to_world(ii, jj)
        b = source_wcs.pixel_to_world(ii + x0, jj + y0)
        assert np.all(a.separation(b).deg < 1e-7), f"row {n}"


@pytest.fixture(scope="module")
def sharded_server(server, tmp_path_factory):
    """A second server on the same images whose bulk jobs are split one image a shard, so that
    the stamps of one job are cut by several of its worker slots and joined."""
    _, images = server
    data_dir = tmp_path_factory.mktemp("stamp-bulk-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"],
                        settings={"SKYCUT_BULK__SHARD_IMAGES": "1"}) as s:
        yield s, images


def test_bulk_stamps_of_every_projection_are_astropys_cutout2d(sharded_server):
    """Issue 15's pixel-exact rule: a bulk job's stamps, over TAN, TAN-SIP, SIN and ZEA images
    and hanging over their edges, equal astropy's Cutout2D at the same sky positions, when the
    job is shared as one shard per image."""
    s, images = sharded_server
    size = 16
    rows = []
    for name in sorted(IMAGES):
        with fits.open(images / f"{name}.fits") as hdul:
            wcs = WCS(hdul[0].header)
        for x, y in SPOTS:
            sky = wcs.pixel_to_world(x, y)
            rows.append((float(sky.ra.deg), float(sky.dec.deg), name))
    catalogue = "ra,dec,id\n" + "".join(
        f"{ra!r},{dec!r},butler://{REPOSITORY}/{name}\n" for ra, dec, name in rows)
    r = requests.post(
        f"{s.base_url}/bulk",
        data={"UPLOAD": "cat,param:cat", "SIZE": str(size), "PHASE": "RUN"},
        files={"cat": ("cat.csv", catalogue)},
        allow_redirects=False, timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 303, r.text
    job = r.headers["Location"]
    phase = "QUEUED"
    for _ in range(20):
        phase = requests.get(f"{job}/phase", timeout=HTTP_TIMEOUT).text
        if phase in ("COMPLETED", "ERROR", "ABORTED"):
            break
        requests.get(job, params={"WAIT": "10", "PHASE": phase}, timeout=HTTP_TIMEOUT)
    assert phase == "COMPLETED", requests.get(f"{job}/error", timeout=HTTP_TIMEOUT).text
    info = requests.get(job, timeout=HTTP_TIMEOUT).text
    assert f'name="shards" done="{len(IMAGES)}" total="{len(IMAGES)}"' in info, info
    body = requests.get(f"{job}/results/stamps", timeout=HTTP_TIMEOUT).content
    table = Table.read(io.BytesIO(body), format="fits", hdu="STAMPS")
    sources = Table.read(io.BytesIO(body), format="fits", hdu="IMAGES")
    assert list(table["ROW"]) == list(range(len(rows)))
    stamps = np.asarray(table["STAMP"])
    assert stamps.shape == (len(rows), size, size)
    for n, row in enumerate(table):
        ra, dec, name = rows[n]
        assert sources["ID"][row["IMAGE"]] == f"butler://{REPOSITORY}/{name}"
        with fits.open(images / f"{name}.fits") as hdul:
            data, wcs = hdul[0].data, WCS(hdul[0].header)
            px, py = wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
            expected = Cutout2D(data, (float(px), float(py)), size, mode="partial",
                                fill_value=np.nan).data
        np.testing.assert_array_equal(stamps[n], expected, err_msg=f"{name} row {n}")
