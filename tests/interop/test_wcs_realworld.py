"""Skycut's cutouts against astropy on real-world headers nobody here wrote.

Why this file exists: a cutout service that answers 204 No Content for an
image that covers the position tells the user there is no data, and a bulk or
light-curve job built on it silently drops epochs. test_wcs_correctness.py
checks the projections with simple reference points; this suite takes the
headers archives actually ship, from astropy's installed test data (nothing is
vendored):

- the FITS WCS Paper II test maps (``maps/1904-66_*.hdr``, one per projection,
  written by Mark Calabretta's tools: oblique reference points with
  LONPOLE/LATPOLE, every projection including the conics, polyconics,
  quad-cubes and HEALPix);
- a Palomar Transient Factory header with TPV distortion (``tpvonly.hdr``);
- SIP headers with inverse coefficients (Spitzer IRAC ``irac_sip.hdr``,
  ``siponly.hdr``) and without (HST ACS ``j94f05bgq_flt.fits``).

Each header gets an image (large ones are cropped to a 300 x 300 corner of the
original chip, far from the reference pixel where distortion is largest, by
moving CRPIX, which is exactly what a cutout of the full chip would carry).
Circles of several sizes at several positions (the centre, near an edge, near
the projection's boundary where the image has one, and one outside the image)
go through ``/sync``, and astropy's own WCS checks that:

- the answer is 204 exactly when astropy finds the circle misses the image;
- the pixel box is the one ``all_world2pix`` gives, within the half pixel of
  rounding either side (one pixel);
- the pixels are the source's;
- with MASK, a pixel is kept exactly when astropy puts its centre inside the
  circle.
"""

import io
import math
import re
from pathlib import Path

import astropy
import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from conftest import running_skycut
from test_wcs_correctness import separation_deg

HTTP_TIMEOUT = 60
REPOSITORY = "realworld"
DATA = Path(astropy.__file__).parent / "wcs" / "tests" / "data"
# Large chips are cropped to this many pixels a side.
CROP = 300

# The celestial WCS keywords an image keeps (distortion lookup tables, which
# need extensions this suite does not write, are left out: D2IM*, CPDIS*, DP*).
WCS_KEY = re.compile(
    r"^(CTYPE[12]|CRPIX[12]|CRVAL[12]|CDELT[12]|CROTA[12]|CUNIT[12]|CD[12]_[12]"
    r"|PC[12]_[12]|PV[12]_\d+|LONPOLE|LATPOLE|EQUINOX|EPOCH|RADESYS|RADECSYS"
    r"|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d_\d|B_\d_\d|AP_\d_\d|BP_\d_\d)$"
)

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


def read_header(name):
    if name.endswith(".fits"):
        with fits.open(DATA / name) as f:
            for hdu in f:
                if "CTYPE1" in hdu.header:
                    return hdu.header.copy()
        raise AssertionError(f"no WCS in {name}")
    return fits.Header.fromfile(DATA / name, sep="", endcard=False, padding=False)


def image_header(name, size=None, corner=(0, 0)):
    """The WCS cards of astropy's header `name`, for an image of `size` (nx, ny)
    whose first pixel is pixel `corner` (0-based) of the original."""
    original = read_header(name)
    h = fits.Header()
    for card in original.cards:
        if WCS_KEY.match(card.keyword):
            h[card.keyword] = card.value
    if corner != (0, 0):
        h["CRPIX1"] -= corner[0]
        h["CRPIX2"] -= corner[1]
    nx, ny = size or (original["NAXIS1"], original["NAXIS2"])
    return h, nx, ny


HEADERS = {}
for path in sorted((DATA / "maps").glob("1904-66_*.hdr")):
    HEADERS[path.stem] = image_header(f"maps/{path.name}")
# The PTF and IRAC SIP chips are 2048 x 4096: a corner far from CRPIX.
HEADERS["ptf-tpv"] = image_header("tpvonly.hdr", (CROP, CROP), (1700, 3700))
HEADERS["sip-ap-bp"] = image_header("siponly.hdr", (CROP, CROP), (1700, 3700))
HEADERS["irac-sip"] = image_header("irac_sip.hdr")
# The ACS WFC chip (4096 x 2048; the file stores a 1 x 1 stub): its far corner.
HEADERS["acs-sip-no-ap-bp"] = image_header("j94f05bgq_flt.fits", (CROP, CROP), (3700, 1700))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    images = tmp_path_factory.mktemp("realworld-images")
    for name, (h, nx, ny) in HEADERS.items():
        data = np.arange(nx * ny, dtype=np.float32).reshape(ny, nx)
        fits.PrimaryHDU(data=data, header=h).writeto(images / f"{name}.fits")
    # A projection code no FITS paper defines: Skycut must say so, not answer 204 or 500.
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---XYZ", "DEC--XYZ"
    h["CRPIX1"] = h["CRPIX2"] = 5.0
    h["CDELT1"], h["CDELT2"] = -0.001, 0.001
    fits.PrimaryHDU(data=np.zeros((10, 10), np.float32), header=h).writeto(
        images / "unknown-projection.fits")
    data_dir = tmp_path_factory.mktemp("realworld-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as s:
        yield s, images
    # For the closing note of a change to the mapping (shown with -s).
    print(f"\nlargest pixel-box difference from astropy: {LARGEST['diff']} px ({LARGEST['case']})")


def source(images, name):
    with fits.open(images / f"{name}.fits") as f:
        return f[0].data, WCS(f[0].header)


def sky_grid(wcs, nx, ny):
    """(lon, lat) of every pixel centre, NaN off the sky."""
    y, x = np.mgrid[0:ny, 0:nx]
    lon, lat = wcs.all_pix2world(x, y, 0)
    return lon, lat


def pixel_scale(wcs, nx, ny):
    lon, lat = wcs.all_pix2world([nx / 2, nx / 2 + 1], [ny / 2, ny / 2], 0)
    if not np.all(np.isfinite(lon)):
        lon, lat = wcs.all_pix2world([0, 1], [0, 0], 0)
    return float(separation_deg(lon[0], lat[0], lon[1], lat[1]))


def positions(name):
    """(label, x, y) pixel positions of the circles asked for on image `name`."""
    h, nx, ny = HEADERS[name]
    wcs = WCS(h)
    lon, _ = sky_grid(wcs, nx, ny)
    on = np.isfinite(lon)
    chosen = []
    # The on-sky pixel nearest the centre, and one near the left edge.
    ys, xs = np.nonzero(on)
    d = (xs - nx / 2) ** 2 + (ys - ny / 2) ** 2
    chosen.append(("centre", xs[d.argmin()], ys[d.argmin()]))
    d = (xs - 4) ** 2 + (ys - ny * 0.4) ** 2
    chosen.append(("edge", xs[d.argmin()], ys[d.argmin()]))
    # Where part of the image lies beyond the projection's domain, an on-sky
    # pixel next to an off-sky one; else a corner.
    border = on & ~(
        np.roll(on, 1, 0) & np.roll(on, -1, 0) & np.roll(on, 1, 1) & np.roll(on, -1, 1)
    )
    border[[0, -1], :] = border[:, [0, -1]] = False
    if border.any():
        ys, xs = np.nonzero(border)
        d = (xs - nx * 0.3) ** 2 + (ys - ny * 0.7) ** 2
        chosen.append(("boundary", xs[d.argmin()], ys[d.argmin()]))
    else:
        chosen.append(("corner", nx - 3, ny - 3))
    return chosen


# Circle radii in pixels: a few pixels, and a large one (clipped by the edge
# or the projection's boundary where there is one).
RADII = [3, 40]

CASES = [
    (name, label, x, y, r)
    for name in HEADERS
    for label, x, y in positions(name)
    for r in RADII
] + [(name, "outside", None, None, 3) for name in HEADERS]


def outside_position(wcs, nx, ny, r_px):
    """A sky position beyond the image's left edge (or bottom, where that is off the sky)."""
    for x, y in [(-r_px - 20, ny / 2), (nx / 2, -r_px - 20), (nx + r_px + 20, ny / 2)]:
        lon, lat = wcs.all_pix2world([x], [y], 0)
        if np.isfinite(lon[0]) and np.isfinite(lat[0]):
            return float(lon[0]), float(lat[0])
    return None


def sync(skycut, name, circle, **extra):
    return requests.get(
        f"{skycut.base_url}/sync",
        params={"ID": f"butler://{REPOSITORY}/{name}", "CIRCLE": circle, **extra},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )


def fetch(r):
    assert r.status_code == 303, f"{r.status_code}: {r.text}"
    cut = requests.get(r.headers["Location"], timeout=HTTP_TIMEOUT)
    assert cut.status_code == 200
    with fits.open(io.BytesIO(cut.content)) as f:
        hdu = f["CUTOUT"]
        return hdu.data.copy(), hdu.header["SKYCX0"] - 1, hdu.header["SKYCY0"] - 1


# The largest difference between an edge of Skycut's box and astropy's, over
# every case that has run (printed when the server fixture ends).
LARGEST = {"diff": 0, "case": None}


@pytest.mark.parametrize(
    "name,label,x,y,r",
    CASES,
    ids=[f"{n}-{label}-r{r}" for n, label, _, _, r in CASES],
)
def test_circle_cutout_matches_astropy(server, name, label, x, y, r):
    skycut, images = server
    data, wcs = source(images, name)
    ny, nx = data.shape
    scale = pixel_scale(wcs, nx, ny)
    r_deg = r * scale
    if x is None:
        at = outside_position(wcs, nx, ny, r)
        if at is None:
            pytest.skip("no sky position beside the image")
        lon, lat = at
    else:
        lon, lat = (float(v[0]) for v in wcs.all_pix2world([x], [y], 0))
    circle = f"{lon % 360:.12f} {lat:.12f} {r_deg:.12f}"
    expected = expected_box(lon, lat, r_deg, wcs, data.shape, scale)
    r_http = sync(skycut, name, circle)
    if expected is None:
        assert r_http.status_code == 204, f"astropy: outside; Skycut {r_http.status_code}: {r_http.text}"
        return
    assert r_http.status_code != 204, f"astropy puts the circle on the image at {expected}"
    cut, x0, y0 = fetch(r_http)
    h, w = cut.shape
    got = (x0, x0 + w - 1, y0, y0 + h - 1)
    diff = max(abs(a - b) for a, b in zip(got, expected))
    if diff > LARGEST["diff"]:
        LARGEST.update(diff=diff, case=f"{name} {label} r={r}: {got} vs {expected}")
    assert diff <= 1, f"Skycut box (x0, x1, y0, y1) {got}, astropy {expected}"
    np.testing.assert_array_equal(cut, data[y0:y0 + h, x0:x0 + w])


def expected_box(lon0, lat0, r_deg, wcs, shape, scale):
    """astropy's (x0, x1, y0, y1) of the pixels the circle reaches into, or None.

    The extent of (circle and image) is that of its outline: the circle's
    boundary inside the image, and the image border inside the circle (as in
    test_wcs_correctness.touched, sampled for circles of tens of pixels).
    """
    ny, nx = shape
    a0, d0, r = (math.radians(v) for v in (lon0, lat0, r_deg))
    pa = np.linspace(0, 2 * math.pi, 4000)
    dec = np.arcsin(np.sin(d0) * math.cos(r) + np.cos(d0) * math.sin(r) * np.cos(pa))
    ra = a0 + np.arctan2(np.sin(pa) * math.sin(r) * math.cos(d0),
                         math.cos(r) - math.sin(d0) * np.sin(dec))
    lon, lat = np.degrees(ra) % 360, np.degrees(dec)
    x, y = wcs.all_world2pix(lon, lat, 0, quiet=True)
    # A point must map back to where it came from: projections send points
    # beyond their domain to positions that belong to other ones. (Within a
    # quarter of a pixel `scale`: the quad-cube CSC's two directions are
    # separate polynomial approximations, a tenth of a pixel apart here.)
    back_lon, back_lat = wcs.all_pix2world(x, y, 0)
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(back_lon)
    back = separation_deg(lon[good], lat[good], back_lon[good], back_lat[good])
    good[good] &= back < max(1e-6, 0.25 * scale)
    good &= (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    xs, ys = list(x[good]), list(y[good])
    tx, ty = np.arange(-0.5, nx - 0.5 + 1e-9, 0.1), np.arange(-0.5, ny - 0.5 + 1e-9, 0.1)
    bx = np.concatenate([tx, tx, np.full_like(ty, -0.5), np.full_like(ty, nx - 0.5)])
    by = np.concatenate([np.full_like(tx, -0.5), np.full_like(tx, ny - 0.5), ty, ty])
    blon, blat = wcs.all_pix2world(bx, by, 0)
    ok = np.isfinite(blon) & np.isfinite(blat)
    hit = np.zeros_like(ok)
    hit[ok] = separation_deg(blon[ok], blat[ok], lon0, lat0) <= r_deg
    xs += list(bx[hit])
    ys += list(by[hit])
    if not xs:
        return None
    pixel = lambda v, n: min(int(math.floor(v + 0.5)), n - 1)
    return pixel(min(xs), nx), pixel(max(xs), nx), pixel(min(ys), ny), pixel(max(ys), ny)


@pytest.mark.parametrize("name", list(HEADERS))
def test_masked_circle_keeps_exactly_the_pixels_astropy_puts_inside(server, name):
    skycut, images = server
    data, wcs = source(images, name)
    ny, nx = data.shape
    _, x, y = positions(name)[0]
    r_deg = 25 * pixel_scale(wcs, nx, ny)
    lon, lat = (float(v[0]) for v in wcs.all_pix2world([x], [y], 0))
    cut, x0, y0 = fetch(sync(skycut, name, f"{lon % 360:.12f} {lat:.12f} {r_deg:.12f}",
                             MASK="true"))
    h, w = cut.shape
    j, i = np.mgrid[y0:y0 + h, x0:x0 + w]
    plon, plat = wcs.all_pix2world(i, j, 0)
    on = np.isfinite(plon) & np.isfinite(plat)
    sep = np.full(plon.shape, np.inf)
    sep[on] = separation_deg(plon[on], plat[on], lon, lat)
    inside = sep <= r_deg
    # A centre within a micro-pixel of the circle may fall either way.
    clear = np.abs(sep - r_deg) > 1e-6 * r_deg
    kept = ~np.isnan(cut)
    assert inside.any()
    wrong = clear & (kept != inside)
    assert not wrong.any(), f"{wrong.sum()} pixels masked unlike astropy, e.g. {np.argwhere(wrong)[:3]}"
    np.testing.assert_array_equal(cut[kept], data[y0:y0 + h, x0:x0 + w][kept])


def test_a_header_that_cannot_be_mapped_is_a_usage_error_naming_it(server):
    skycut, _ = server
    r = sync(skycut, "unknown-projection", "0 0 0.01")
    assert r.status_code == 400, f"{r.status_code}: {r.text}"
    assert r.text.startswith("UsageError"), r.text
    assert "RA---XYZ" in r.text, r.text
