"""Skycut's cutouts against astropy, projection by projection.

Why this file exists: a cutout service must be right to the pixel on the
projections archives use. For each projection (TAN, TAN-SIP, SIN, ZEA, ARC,
STG, AIT, CAR, MOL, HPX; CD-matrix and PC+CDELT forms; equatorial and
galactic axes, with ICRS stencils), this suite writes an
image with astropy, cuts it through a real ``skycut serve`` with several
stencils (centred, clipped by the edge, over a pole, across RA=0, a RANGE
wrapping through RA=0), and checks
with astropy's own WCS that:

- every cutout pixel holds the source's value at the same sky position;
- the cutout's WCS maps each pixel centre to the sky position of the source
  pixel it came from, to 1e-6 degrees;
- the rectangle holds every source pixel whose centre lies in the stencil and
  reaches at most one pixel beyond the stencil on each side: beyond the pixels
  the stencil touches, which may lie further out than the pixels whose centres
  it holds (a sharp polygon tip, or a sliver along the edge of an all-sky
  projection).
"""

import io
import math

import numpy as np
import pytest
import requests
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from conftest import running_skycut

HTTP_TIMEOUT = 60
REPOSITORY = "wcs"


def header(proj, nx, ny, crval, scale, matrix="pc", rotation_deg=0.0, extra=None,
           frame="icrs"):
    """A celestial header; `matrix` picks the PC+CDELT or the CD form."""
    h = fits.Header()
    base = proj.split("-")[0]
    lon, lat = ("RA--", "DEC-") if frame == "icrs" else ("GLON", "GLAT")
    h["CTYPE1"] = f"{lon}-{base}" + ("-SIP" if proj.endswith("SIP") else "")
    h["CTYPE2"] = f"{lat}-{base}" + ("-SIP" if proj.endswith("SIP") else "")
    h["CRPIX1"] = (nx + 1) / 2
    h["CRPIX2"] = (ny + 1) / 2
    h["CRVAL1"], h["CRVAL2"] = crval
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    if frame == "icrs":
        h["RADESYS"] = "ICRS"
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    if matrix == "cd":
        h["CD1_1"], h["CD1_2"] = -scale * c, scale * s
        h["CD2_1"], h["CD2_2"] = scale * s, scale * c
    else:
        h["CDELT1"], h["CDELT2"] = -scale, scale
        h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = c, -s, s, c
    for k, v in (extra or {}).items():
        h[k] = v
    return h


# SIP terms that move the image edges by about a pixel (third order included),
# with the rough first-order inverse that archives ship as AP/BP.
SIP = {
    "A_ORDER": 3, "B_ORDER": 3, "A_2_0": 5e-5, "A_0_2": -3e-5, "A_1_1": 2e-5,
    "A_3_0": 1e-7, "B_1_1": 4e-5, "B_0_2": 2e-5, "B_2_1": -5e-8,
    "AP_ORDER": 2, "BP_ORDER": 2, "AP_2_0": -5e-5, "AP_0_2": 3e-5, "AP_1_1": -2e-5,
    "BP_1_1": -4e-5, "BP_0_2": -2e-5,
}

# (name, header) of every test image. Small-field projections get a field
# straddling RA=0 and one over the north pole; all-sky ones a whole-sky image.
IMAGES = []
for proj, matrix, rot in [
    ("TAN", "pc", 0.0), ("TAN-SIP", "pc", 0.0), ("SIN", "pc", 20.0),
    ("ZEA", "pc", 0.0), ("ARC", "cd", 0.0), ("STG", "cd", 30.0),
]:
    extra = SIP if proj == "TAN-SIP" else None
    name = proj.lower().replace("-", "")
    IMAGES.append((f"{name}-ra0", header(proj, 240, 200, (0.0, 10.0), 10 / 3600,
                                         matrix, rot, extra)))
    IMAGES.append((f"{name}-pole", header(proj, 240, 200, (0.0, 89.8), 18 / 3600,
                                          matrix, rot, extra)))
for proj in ["AIT", "CAR", "MOL", "HPX"]:
    IMAGES.append((f"{proj.lower()}-sky", header(proj, 360, 180, (0.0, 0.0), 1.0)))
# Galactic images: stencils stay ICRS. A field whose ICRS footprint straddles
# RA=0 (l=102.626, b=-50.833 is RA 0, Dec 10), and a whole-sky one.
IMAGES.append(("gtan-ra0", header("TAN", 240, 200, (102.62624, -50.83256), 10 / 3600,
                                  "cd", 0.0, frame="galactic")))
IMAGES.append(("gcar-sky", header("CAR", 360, 180, (0.0, 0.0), 1.0, frame="galactic")))

STENCILS = {
    "ra0": [
        ("CIRCLE", "0.0 10.0 0.05"),  # centred, across RA=0
        ("CIRCLE", "359.91 10.0 0.04"),  # clipped by the left... or right edge
        ("POLYGON", "359.98 9.98 0.02 9.98 0.02 10.02 359.98 10.02"),
        ("POS", "RANGE 0.01 0.05 -Inf +Inf"),
        ("POS", "RANGE 359.96 0.03 -Inf +Inf"),  # wraps through RA=0
    ],
    "pole": [
        ("CIRCLE", "120 89.95 0.1"),  # holds the pole
        ("POLYGON", "0 89.9 120 89.9 240 89.9"),  # around the pole
        ("CIRCLE", "45 89.5 0.15"),  # clipped by the edge
    ],
    "sky": [
        ("CIRCLE", "0.0 0.0 5"),  # centred, across RA=0
        ("CIRCLE", "30 85 6"),  # over the pole
        ("CIRCLE", "175 20 12"),  # at the edge of the projection
        ("POLYGON", "350 -5 10 -5 10 5 350 5"),  # across RA=0
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    images = tmp_path_factory.mktemp("wcs-images")
    for name, h in IMAGES:
        ny, nx = h["CRPIX2"] * 2 - 1, h["CRPIX1"] * 2 - 1
        data = np.arange(int(nx) * int(ny), dtype=np.float32).reshape(int(ny), int(nx))
        fits.PrimaryHDU(data=data, header=h).writeto(images / f"{name}.fits")
    data_dir = tmp_path_factory.mktemp("wcs-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as s:
        yield s, images


def unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def is_galactic(wcs):
    return wcs.wcs.ctype[0].startswith("GLON")


def to_icrs(wcs, lon, lat):
    """ICRS (ra, dec) of the image frame's (lon, lat)."""
    if not is_galactic(wcs):
        return lon, lat
    c = SkyCoord(lon, lat, unit="deg", frame="galactic").icrs
    return c.ra.deg, c.dec.deg


def from_icrs(wcs, ra, dec):
    """The image frame's (lon, lat) of ICRS (ra, dec)."""
    if not is_galactic(wcs):
        return ra, dec
    c = SkyCoord(ra, dec, unit="deg", frame="icrs").galactic
    return c.l.deg, c.b.deg


def inside(kind, value, ra, dec):
    """Which sky positions lie in the stencil, computed independently of Skycut."""
    numbers = [float(v) for v in value.split()[1 if kind == "POS" else 0:]]
    p = unit(ra, dec)
    if kind == "CIRCLE":
        c = unit(numbers[0], numbers[1])
        return p @ c >= math.cos(math.radians(numbers[2]))
    if kind == "POLYGON":
        v = unit(np.array(numbers[0::2]), np.array(numbers[1::2]))
        signs = [p @ np.cross(v[i], v[(i + 1) % len(v)]) for i in range(len(v))]
        signs = np.stack(signs)
        # The same half-spaces also bound the antipodal mirror of the polygon.
        near = p @ v.sum(axis=0) > 0
        return near & (np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0))
    lo, hi, dlo, dhi = numbers
    in_ra = (ra >= lo) & (ra <= hi) if lo <= hi else (ra >= lo) | (ra <= hi)
    return in_ra & (dec >= dlo) & (dec <= dhi)


def slerp(a, b, n):
    """`n` points along the shorter great-circle arc from unit vector a to b."""
    omega = math.atan2(np.linalg.norm(np.cross(a, b)), a @ b)
    t = np.linspace(0.0, 1.0, n)[:, None]
    if omega < 1e-15:
        return np.repeat(a[None, :], n, axis=0)
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)


def boundary(kind, value):
    """(ra, dec) arrays densely sampled along the stencil's boundary."""
    numbers = [float(v) for v in value.split()[1 if kind == "POS" else 0:]]
    if kind == "CIRCLE":
        ra0, dec0, r = (math.radians(v) for v in numbers)
        pa = np.linspace(0, 2 * math.pi, 40000)
        dec = np.arcsin(np.sin(dec0) * math.cos(r) + np.cos(dec0) * math.sin(r) * np.cos(pa))
        ra = ra0 + np.arctan2(np.sin(pa) * math.sin(r) * math.cos(dec0),
                              math.cos(r) - math.sin(dec0) * np.sin(dec))
        return np.degrees(ra) % 360, np.degrees(dec)
    if kind == "POLYGON":
        v = unit(np.array(numbers[0::2]), np.array(numbers[1::2]))
        p = np.concatenate([slerp(v[i], v[(i + 1) % len(v)], 5000) for i in range(len(v))])
        return np.degrees(np.arctan2(p[:, 1], p[:, 0])) % 360, np.degrees(np.arcsin(p[:, 2]))
    lo, hi, dlo, dhi = np.clip(numbers, [0, 0, -90, -90], [360, 360, 90, 90])
    if lo > hi:
        hi += 360
    t = np.linspace(0, 1, 40000)
    ra = np.concatenate([lo + (hi - lo) * t, np.full_like(t, hi), lo + (hi - lo) * t, np.full_like(t, lo)])
    dec = np.concatenate([np.full_like(t, dlo), dlo + (dhi - dlo) * t, np.full_like(t, dhi), dlo + (dhi - dlo) * t])
    return ra, dec


def touched(kind, value, wcs, shape):
    """The first and last columns and rows of pixels that the stencil reaches into.

    The extent of (stencil and image) is that of its outline: the boundary
    inside the image, and the image border inside the stencil.
    """
    ny, nx = shape
    ra, dec = boundary(kind, value)
    lon, lat = from_icrs(wcs, ra, dec)
    x, y = wcs.all_world2pix(lon, lat, 0, quiet=True)
    # A point must also map back to where it came from: all-sky projections
    # send points beyond their domain to positions that belong to other ones.
    back_lon, back_lat = wcs.all_pix2world(x, y, 0)
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(back_lon)
    good[good] &= separation_deg(lon[good], lat[good], back_lon[good], back_lat[good]) < 1e-6
    good &= (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    xs, ys = list(x[good]), list(y[good])
    t = np.arange(-0.5, max(nx, ny), 0.05)
    bx = np.concatenate([t[t <= nx - 0.5], np.full(np.sum(t <= ny - 0.5), -0.5)])
    by = np.concatenate([np.full(np.sum(t <= nx - 0.5), -0.5), t[t <= ny - 0.5]])
    for ex, ey in [(bx, by), (nx - 1 - bx, ny - 1 - by)]:
        bra, bdec = wcs.all_pix2world(ex, ey, 0)
        ok = np.isfinite(bra) & np.isfinite(bdec)
        hit = np.zeros_like(ok)
        hit[ok] = inside(kind, value, *to_icrs(wcs, bra[ok], bdec[ok]))
        xs += list(ex[hit])
        ys += list(ey[hit])
    pixel = lambda v: int(math.floor(v + 0.5))
    return pixel(min(xs)), pixel(max(xs)), pixel(min(ys)), pixel(max(ys))


def separation_deg(ra1, dec1, ra2, dec2):
    # atan2 of |a x b| and a . b keeps its precision at tiny angles (arccos does not).
    a, b = unit(ra1, dec1), unit(ra2, dec2)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, -1)))


CASES = [
    (name, kind, value)
    for name, _ in IMAGES
    for kind, value in STENCILS[name.rsplit("-", 1)[1]]
]


@pytest.mark.parametrize("name,kind,value", CASES)
def test_cutout_matches_astropy(server, name, kind, value):
    skycut, images = server
    with fits.open(images / f"{name}.fits") as f:
        source = f[0].data
        src_wcs = WCS(f[0].header)
    r = requests.get(
        f"{skycut.base_url}/sync",
        params={"ID": f"butler://{REPOSITORY}/{name}", kind: value},
        timeout=HTTP_TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 303, r.text
    cut = requests.get(r.headers["Location"], timeout=HTTP_TIMEOUT)
    assert cut.status_code == 200
    with fits.open(io.BytesIO(cut.content)) as f:
        hdu = f["CUTOUT"]
        data = hdu.data
        cut_wcs = WCS(hdu.header)
        x0, y0 = hdu.header["SKYCX0"] - 1, hdu.header["SKYCY0"] - 1
    h, w = data.shape

    # The cutout's WCS puts each pixel where the source pixel it came from is.
    j, i = np.mgrid[0:h, 0:w]
    ra_c, dec_c = cut_wcs.all_pix2world(i, j, 0)
    ra_s, dec_s = src_wcs.all_pix2world(i + x0, j + y0, 0)
    on_sky = np.isfinite(ra_s) & np.isfinite(dec_s)
    assert on_sky.any()
    assert np.array_equal(np.isfinite(ra_c), on_sky)
    sep = separation_deg(ra_c[on_sky], dec_c[on_sky], ra_s[on_sky], dec_s[on_sky])
    assert sep.max() < 1e-6, f"WCS off by {sep.max()} deg"

    # Each cutout pixel holds the source's value at its sky position. HPX has
    # pixels outside its map (between the polar triangles) whose sky position
    # belongs to another pixel; only pixels that are their position's own are
    # compared that way, and every pixel must be the source pixel it claims.
    px, py = src_wcs.all_world2pix(ra_c[on_sky], dec_c[on_sky], 0)
    px, py = np.rint(px).astype(int), np.rint(py).astype(int)
    own = (px == (i + x0)[on_sky]) & (py == (j + y0)[on_sky])
    assert own.mean() > 0.5
    np.testing.assert_array_equal(data[on_sky][own], source[py[own], px[own]])
    np.testing.assert_array_equal(data, source[y0:y0 + h, x0:x0 + w])

    # The rectangle holds every pixel whose centre is in the stencil, and reaches
    # at most one pixel beyond the stencil on each side.
    sy, sx = np.mgrid[0:source.shape[0], 0:source.shape[1]]
    ra, dec = src_wcs.all_pix2world(sx, sy, 0)
    ok = np.isfinite(ra) & np.isfinite(dec)
    hit = np.zeros_like(ok)
    hit[ok] = inside(kind, value, *to_icrs(src_wcs, ra[ok], dec[ok]))
    assert hit.any(), "test stencil misses the image"
    ys, xs = np.nonzero(hit)
    assert x0 <= xs.min() and xs.max() <= x0 + w - 1, (x0, w, xs.min(), xs.max())
    assert y0 <= ys.min() and ys.max() <= y0 + h - 1, (y0, h, ys.min(), ys.max())
    tx0, tx1, ty0, ty1 = touched(kind, value, src_wcs, source.shape)
    assert x0 >= tx0 - 1 and x0 + w - 1 <= tx1 + 1, (x0, w, tx0, tx1, xs.min(), xs.max())
    assert y0 >= ty0 - 1 and y0 + h - 1 <= ty1 + 1, (y0, h, ty0, ty1, ys.min(), ys.max())
