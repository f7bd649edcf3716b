"""SIA 2.0 interop: pyvo's ``SIA2Service`` finds exactly the images whose
footprints cover a position, as astropy computes those footprints.

Why this file exists: discovery is only useful if it is right at the edges.
This suite writes images of several projections with astropy (one straddling
RA 0, one over the north pole, one without a WCS, one that is not FITS),
lets ``skycut serve`` index them in the background, and for many positions
compares what ``SIA2Service(...).search(pos=...)`` returns with the images
whose ``WCS.calc_footprint(center=False)`` polygon (the outer pixel edges,
great-circle edges between them, as SIA's
``s_region``) contains the position. Then it follows a row's DataLink to a
SODA cutout, and checks the TIME constraint and ``stilts votlint``.
"""

import io
import math
import shutil
import subprocess
import time

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pyvo.dal import SIA2Service
from pyvo.dal.adhoc import DatalinkResults, SodaQuery

from conftest import running_skycut

REPOSITORY = "sia"
HTTP_TIMEOUT = 60


def header(proj, nx, ny, crval, scale, rotation_deg=0.0):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = f"RA---{proj}", f"DEC--{proj}"
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    h["CRVAL1"], h["CRVAL2"] = crval
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["RADESYS"] = "ICRS"
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    h["CDELT1"], h["CDELT2"] = -scale, scale
    h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = c, -s, s, c
    return h


# name, projection, size, centre, scale (deg/pixel), rotation, DATE-OBS.
IMAGES = [
    ("tan", "TAN", (300, 200), (150.0, 2.0), 2e-3, 0.0, "2024-01-01T00:00:00"),
    ("tan2", "TAN", (200, 200), (150.3, 2.1), 2e-3, 35.0, "2024-02-01T00:00:00"),
    ("sin_ra0", "SIN", (240, 160), (0.2, -10.0), 3e-3, 10.0, "2024-03-01T00:00:00"),
    ("zea_pole", "ZEA", (200, 200), (45.0, 89.8), 3e-3, 0.0, "2024-04-01T00:00:00"),
    ("arc", "ARC", (150, 250), (210.0, -45.0), 4e-3, -20.0, None),
    ("stg", "STG", (180, 180), (359.7, -10.2), 2e-3, 0.0, "2024-05-01T00:00:00"),
]


def write_images(directory):
    footprints = {}
    for name, proj, (nx, ny), crval, scale, rot, date in IMAGES:
        h = header(proj, nx, ny, crval, scale, rot)
        if date:
            h["DATE-OBS"] = date
            h["EXPTIME"] = 30.0
        data = np.arange(nx * ny, dtype=np.float32).reshape(ny, nx)
        fits.PrimaryHDU(data, h).writeto(directory / f"{name}.fits")
        # center=False: the outer edges of the corner pixels, the extent the image covers (and
        # what Skycut indexes); the default would be the centres of the corner pixels.
        footprints[name] = WCS(h).calc_footprint(axes=(nx, ny), center=False)
    # Listed as unusable, never found.
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(directory / "nowcs.fits")
    (directory / "junk.fits").write_bytes(b"not a FITS file at all")
    return footprints


def unit(ra, dec):
    ra, dec = math.radians(ra), math.radians(dec)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])


def inside(footprint, ra, dec, margin_deg):
    """True/False when (ra, dec) is inside/outside the great-circle polygon by
    more than margin_deg; None when it is too close to an edge to tell."""
    p = unit(ra, dec)
    vs = [unit(r, d) for r, d in footprint]
    sides = []
    for a, b in zip(vs, vs[1:] + vs[:1]):
        n = np.cross(a, b)
        n /= np.linalg.norm(n)
        sides.append(math.degrees(math.asin(np.clip(np.dot(n, p), -1, 1))))
    if all(s > margin_deg for s in sides) or all(s < -margin_deg for s in sides):
        return True
    if any(abs(s) < margin_deg for s in sides):
        return None
    return False


@pytest.fixture(scope="module")
def sia_server(tmp_path_factory):
    images = tmp_path_factory.mktemp("sia-images")
    footprints = write_images(images)
    data_dir = tmp_path_factory.mktemp("sia-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as server:
        service = SIA2Service(server.base_url)
        deadline = time.monotonic() + 60
        while True:
            everything = service.search(pos=(0, 360, -90, 90))
            if len(everything) == len(IMAGES) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(everything) == len(IMAGES), [r.obs_publisher_did for r in everything]
        yield server, service, footprints


def probe_points(footprints, rng):
    """Corners, near-edge and random points around every image."""
    points = []
    for fp in footprints.values():
        centre = fp.mean(axis=0)
        for r, d in fp:
            points.append((r, d))
        for _ in range(25):
            i = rng.integers(4)
            t = rng.uniform(-0.3, 1.3)
            a, b = fp[i], fp[(i + 1) % 4]
            edge = a + t * (b - a) if abs(a[0] - b[0]) < 180 else a
            w = rng.uniform(0.7, 1.3)
            points.append(tuple(centre + w * (edge - centre)))
    return [((r % 360.0), float(np.clip(d, -89.999, 89.999))) for r, d in points]


def test_sia2_finds_exactly_the_images_whose_footprints_cover_a_position(sia_server):
    _, service, footprints = sia_server
    rng = np.random.default_rng(14)
    # Two points the images are built to have: across RA 0, and the pole itself.
    points = probe_points(footprints, rng) + [(359.95, -10.1), (0.1, 90.0 - 1e-9), (123.0, 89.9)]
    checked = 0
    for ra, dec in points:
        expected = {}
        for name, fp in footprints.items():
            expected[name] = inside(fp.tolist(), ra, dec, 1e-4)
        if None in expected.values():
            continue
        found = service.search(pos=(ra, dec, 1e-6))
        got = {r.obs_publisher_did.rsplit("/", 1)[1] for r in found}
        want = {name for name, hit in expected.items() if hit}
        assert got == want, (ra, dec)
        checked += 1
    assert checked > 100


def test_rows_carry_obscore_values_and_lead_to_a_cutout(sia_server):
    server, service, footprints = sia_server
    found = service.search(pos=(0.2, -10.0, 0.01))
    by_id = {r.obs_publisher_did: r for r in found}
    row = by_id[f"butler://{REPOSITORY}/sin_ra0"]
    assert (row.s_xel1, row.s_xel2) == (240, 160)
    start = Time("2024-03-01T00:00:00").mjd
    # pyvo's record turns t_min and t_max into astropy Times; the columns hold MJD numbers.
    t_min, t_max = float(row["t_min"]), float(row["t_max"])
    assert abs(t_min - start) < 1e-6 and abs(t_max - (start + 30 / 86400)) < 1e-6
    # s_region is the astropy footprint (same corners, maybe another order).
    region = np.array(row["s_region"], dtype=float).reshape(-1, 2)
    fp = footprints["sin_ra0"]
    for corner in fp:
        d = np.min(np.hypot(((region[:, 0] - corner[0] + 180) % 360) - 180, region[:, 1] - corner[1]))
        assert d < 1e-6, (corner, region)
    # The row's DataLink document leads to a SODA cutout of that image.
    links = row.getdatalink()
    assert isinstance(links, DatalinkResults)
    proc = links.get_first_proc()
    resource = links.get_adhocservice_by_id(proc.service_def)
    query = SodaQuery.from_resource(proc, resource, circle=(0.2, -10.0, 0.05) * u.deg)
    hdus = fits.open(io.BytesIO(query.execute_stream().read()))
    cut = hdus[1]
    assert cut.data.shape[0] > 10 and cut.data.shape[1] > 10


def test_time_constraint_and_votlint(sia_server):
    server, service, _ = sia_server
    feb = (Time("2024-01-15T00:00:00"), Time("2024-02-15T00:00:00"))
    found = service.search(pos=(150.15, 2.05, 0.5), time=feb)
    assert [r.obs_publisher_did for r in found] == [f"butler://{REPOSITORY}/tan2"]
    everything = service.search(pos=(150.15, 2.05, 0.5))
    # Time order: January's image first.
    assert [r.obs_publisher_did for r in everything] == [
        f"butler://{REPOSITORY}/tan", f"butler://{REPOSITORY}/tan2"]
    if shutil.which("stilts") is None:
        pytest.skip("stilts is not installed")
    body = requests.get(f"{server.base_url}/sia/query",
                        params={"POS": "CIRCLE 150.15 2.05 0.5"}, timeout=HTTP_TIMEOUT).text
    path = server.data_dir / "sia.vot"
    path.write_text(body)
    out = subprocess.run(["stilts", "votlint", f"votable={path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
