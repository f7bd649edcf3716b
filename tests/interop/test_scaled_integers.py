"""Integer images with BSCALE/BZERO/BLANK, cut by Skycut and read by astropy.

Why this file exists: archives store many images as scaled integers (BITPIX
8, 16, 32 or 64 with a real BSCALE and BZERO, and the unsigned-16 and
signed-byte conventions, BZERO 32768 and -128). A cutout must keep the stored
integers and the scaling keywords exactly, so that astropy, which applies the
scaling on reading, sees in the cutout the very physical values (and blank
pixels) it sees in the source at the same pixels.
"""

import io

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.wcs import WCS

from conftest import running_skycut

HTTP_TIMEOUT = 60
REPOSITORY = "ints"
NX, NY = 40, 30
RA, DEC = 30.0, -20.0
SCALE = 1.0 / 3600.0
# Source pixels (x, y), 0-based, holding BLANK: inside every cutout below.
BLANK_PIXELS = [(18, 14), (21, 16)]

# name: (stored dtype, BSCALE, BZERO, BLANK, stored value of pixel (x, y))
IMAGES = {
    "byte-signed": (np.uint8, 1, -128, 0, lambda x, y: (7 * x + 13 * y) % 255 + 1),
    "byte-scaled": (np.uint8, 0.1, -3.25, 255, lambda x, y: (3 * x + 5 * y) % 250),
    "short-unsigned": (np.int16, 1, 32768, -32768, lambda x, y: 1000 * y + x - 20000),
    "short-scaled": (np.int16, 0.0123, -300.5, -1, lambda x, y: 1000 * y + x - 30000),
    "int-scaled": (np.int32, 2.5e-3, 100000.75, -(2**31), lambda x, y: 40_000_000 * (y - 15) + x),
    "long-scaled": (np.int64, 1e-6, 3.0, -1, lambda x, y: 2**60 + 1000 * y + x),
}


def write_image(path, dtype, bscale, bzero, blank, stored):
    """Writes the stored values as they are, then adds the scaling keywords untouched."""
    y, x = np.mgrid[0:NY, 0:NX]
    raw = np.vectorize(stored, otypes=[np.int64])(x, y).astype(dtype)
    for bx, by in BLANK_PIXELS:
        raw[by, bx] = blank
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"] = (NX + 1) / 2, (NY + 1) / 2
    h["CRVAL1"], h["CRVAL2"] = RA, DEC
    h["CDELT1"], h["CDELT2"] = -SCALE, SCALE
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["RADESYS"] = "ICRS"
    h["BLANK"] = blank
    fits.PrimaryHDU(data=raw, header=h).writeto(path)
    # astropy drops BSCALE/BZERO given with integer data; add them without rescaling.
    with fits.open(path, mode="update", do_not_scale_image_data=True) as f:
        f[0].header["BSCALE"] = bscale
        f[0].header["BZERO"] = bzero


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    images = tmp_path_factory.mktemp("int-images")
    for name, spec in IMAGES.items():
        write_image(images / f"{name}.fits", *spec)
    data_dir = tmp_path_factory.mktemp("int-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as s:
        yield s, images


def cutout(server, name, **extra):
    """The cutout of a 4-pixel circle around source pixel (20, 15): its HDU list."""
    s, images = server
    with fits.open(images / f"{name}.fits") as f:
        ra, dec = WCS(f[0].header).pixel_to_world_values(20, 15)
    params = {"ID": f"butler://{REPOSITORY}/{name}",
              "CIRCLE": f"{float(ra)} {float(dec)} {4 * SCALE}", **extra}
    r = requests.get(f"{s.base_url}/sync", params=params, allow_redirects=False,
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 303, r.text
    got = requests.get(r.headers["Location"], timeout=HTTP_TIMEOUT)
    assert got.status_code == 200
    return got.content


def open_both(server, name, content, scaled):
    """(source, cutout) data over the cutout's pixels, and the two headers."""
    _, images = server
    flag = {"do_not_scale_image_data": not scaled}
    with fits.open(io.BytesIO(content), **flag) as cut, \
            fits.open(images / f"{name}.fits", **flag) as src:
        hdu = cut["CUTOUT"]
        x0, y0 = hdu.header["SKYCX0"] - 1, hdu.header["SKYCY0"] - 1
        ny, nx = hdu.data.shape
        return (src[0].data[y0:y0 + ny, x0:x0 + nx].copy(), hdu.data.copy(),
                src[0].header.copy(), hdu.header.copy(), (x0, y0))


@pytest.mark.parametrize("name", IMAGES)
def test_astropy_reads_the_source_physical_values_in_a_scaled_integer_cutout(server, name):
    content = cutout(server, name)
    source, cut, *_ = open_both(server, name, content, True)
    assert cut.dtype == source.dtype
    assert cut.shape == (9, 9)
    np.testing.assert_array_equal(cut, source)
    # The stored integers themselves, BLANK included, and the keywords that scale them (astropy
    # drops BSCALE/BZERO from a header whose data it has scaled: read them unscaled).
    raw_source, raw_cut, src_header, cut_header, (x0, y0) = open_both(
        server, name, content, False)
    for key in ("BITPIX", "BSCALE", "BZERO", "BLANK"):
        assert cut_header[key] == src_header[key], key
        assert type(cut_header[key]) is type(src_header[key]), key
    assert raw_cut.dtype == raw_source.dtype
    np.testing.assert_array_equal(raw_cut, raw_source)
    blank = src_header["BLANK"]
    assert sorted(zip(*np.nonzero(raw_cut == blank))) == sorted(
        (by - y0, bx - x0) for bx, by in BLANK_PIXELS)
    # astropy makes BLANK pixels NaN where the scaling is real.
    if isinstance(src_header["BSCALE"], float) or src_header["BSCALE"] != 1:
        assert np.isnan(cut[BLANK_PIXELS[0][1] - y0, BLANK_PIXELS[0][0] - x0])


@pytest.mark.parametrize("name", IMAGES)
def test_a_masked_scaled_integer_cutout_is_blank_outside_and_exact_inside(server, name):
    content = cutout(server, name, MASK="true")
    raw_source, raw_cut, src_header, cut_header, _ = open_both(server, name, content, False)
    blank = src_header["BLANK"]
    assert cut_header["BLANK"] == blank
    # The corner of the 9 x 9 box is outside the circle; the centre is inside.
    assert raw_cut[0, 0] == blank
    assert raw_cut[4, 4] == raw_source[4, 4]
    source, cut, *_ = open_both(server, name, content, True)
    kept = raw_cut != blank
    assert kept.sum() > 40
    np.testing.assert_array_equal(cut[kept], source[kept])
