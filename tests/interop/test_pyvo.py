"""Interop tests: Skycut against the real Python VO clients.

Why this file exists: Skycut's own Rust tests check what the service sends;
this suite checks that what astronomers actually run -- pyvo (its UWS parser,
``SodaQuery`` and the generic ``AsyncTAPJob`` job class), astropy (FITS and
WCS) and plain ``requests`` scripts -- can drive SODA 1.0 sync and UWS 1.1
async cutouts end to end against the real ``skycut`` binary. Each test is
named after the client behaviour it guards. Synchronisation is done with UWS
``WAIT``, never with sleeps.
"""

import io
import re
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pyvo.dal.adhoc import SodaQuery
from pyvo.dal.exceptions import DALServiceError
from pyvo.dal.tap import AsyncTAPJob
from pyvo.io import uws

HTTP_TIMEOUT = 60  # seconds, for every single request
WAIT_S = 30  # UWS WAIT per blocking poll
MAX_POLLS = 10  # bounded number of WAIT polls (no sleeps)
FINAL_PHASES = {"COMPLETED", "ERROR", "ABORTED"}
UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"

M31 = "butler://demo/m31"
M31_CENTRE = (10.684708, 41.26875)
M31_CIRCLE = (10.684708, 41.26875, 0.0178)


# ---------------------------------------------------------------- helpers


def circle_text(circle):
    return " ".join(repr(float(v)) for v in circle)


def create_job(base_url, **params):
    """POST to the job list as a UWS client does; return the job URL."""
    resp = requests.post(
        f"{base_url}/jobs", data=params, allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 303, (resp.status_code, resp.text)
    location = resp.headers["Location"]
    parsed = urlparse(location)
    assert parsed.scheme in ("http", "https") and parsed.netloc, location
    assert not parsed.query and not location.endswith("/"), location
    assert location.startswith(f"{base_url}/jobs/"), location
    return location


def fetch_job(job_url, **params):
    resp = requests.get(job_url, params=params, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip() in ("text/xml", "application/xml"), ctype
    return uws.parse_job(io.BytesIO(resp.content), pedantic=True)


def wait_until_final(job_url):
    """Block with UWS WAIT until the job leaves the active phases."""
    job = fetch_job(job_url)
    for _ in range(MAX_POLLS):
        if job.phase in FINAL_PHASES:
            return job
        job = fetch_job(job_url, WAIT=WAIT_S)
    raise AssertionError(f"job {job_url} still {job.phase} after WAIT polls")


def download(url):
    resp = requests.get(url, timeout=HTTP_TIMEOUT)  # follows 303s
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:500])
    return resp


def open_fits(data):
    assert data[:6] == b"SIMPLE", data[:80]
    return fits.open(io.BytesIO(data))


def image_hdu(hdul):
    for hdu in hdul:
        if hdu.data is not None and getattr(hdu.data, "ndim", 0) == 2:
            return hdu
    raise AssertionError("no 2-D image HDU in " + repr(hdul.info(output=False)))


def cutout_hdu(hdul):
    """The cutout image; Skycut writes it as the first extension."""
    assert len(hdul) >= 2, hdul.info(output=False)
    hdu = hdul[1]
    assert hdu.data is not None and hdu.data.ndim == 2
    return hdu


def soda_query(base_url, ident, **kwargs):
    query = SodaQuery(baseurl=f"{base_url}/sync", **kwargs)
    query["ID"] = ident
    return query


def read_soda_stream(query, post=False):
    stream = query.execute_stream(post=post)
    try:
        data = stream.read()
    finally:
        stream.close()
    query.raise_if_error()
    return data


def param_values(job):
    out = {}
    for p in job.parameters:
        out.setdefault(p.id_, []).append(p.content)
    return out


# ------------------------------------------------------------------ tests


def test_pyvo_uws_parser_reads_every_job_document(base_url):
    job_url = create_job(base_url, ID=M31, CIRCLE=circle_text(M31_CIRCLE))
    job_id = job_url.rsplit("/", 1)[1]

    # PENDING job document
    job = fetch_job(job_url)
    assert job.version == "1.1"
    assert job.jobid == job_id
    assert job.phase == "PENDING"
    assert job.ownerid  # ownerId is always present
    assert isinstance(job.creationtime, Time)
    assert job.starttime is None and job.endtime is None
    # executionDuration: an integer number of seconds, never nil
    assert job.executionduration is not None
    duration_s = job.executionduration.to_value(u.s)
    assert duration_s >= 0 and float(duration_s).is_integer()
    # destruction: always given, after creation
    assert isinstance(job.destruction, Time)
    assert job.destruction > job.creationtime
    params = param_values(job)
    assert params["ID"] == [M31]
    assert [float(v) for v in params["CIRCLE"][0].split()] == list(M31_CIRCLE)
    assert len(job.results) == 0

    # text children agree with the job document
    phase = requests.get(f"{job_url}/phase", timeout=HTTP_TIMEOUT)
    assert phase.status_code == 200 and phase.text.strip() == "PENDING"
    assert phase.headers["Content-Type"].startswith("text/plain")
    dur = requests.get(f"{job_url}/executionduration", timeout=HTTP_TIMEOUT)
    assert dur.status_code == 200 and int(dur.text.strip()) == int(duration_s)
    destr = requests.get(f"{job_url}/destruction", timeout=HTTP_TIMEOUT)
    assert destr.status_code == 200
    assert Time(destr.text.strip().rstrip("Z"), format="isot") == job.destruction

    # RUN: exactly 303 back to the job, and at least QUEUED afterwards
    run = requests.post(
        f"{job_url}/phase", data={"PHASE": "RUN"}, allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert run.status_code == 303, (run.status_code, run.text)
    assert run.headers["Location"] == job_url
    assert fetch_job(job_url).phase in {"QUEUED", "EXECUTING", "COMPLETED"}

    # COMPLETED job document with its single result
    job = wait_until_final(job_url)
    assert job.phase == "COMPLETED", job.errorsummary
    assert isinstance(job.starttime, Time) and isinstance(job.endtime, Time)
    assert job.creationtime <= job.starttime <= job.endtime
    assert len(job.results) == 1
    result = job.results[0]
    assert result.id_ == "result"
    assert result.mimetype == "application/fits"
    href = result.href
    assert urlparse(href).scheme in ("http", "https") and urlparse(href).netloc
    body = download(href).content
    assert result.size == len(body)
    with open_fits(body) as hdul:
        assert cutout_hdu(hdul).header["SKYCSRC"] == M31

    # the stable result URL redirects (303) to a fresh signed URL
    stable = requests.get(
        f"{job_url}/results/result", allow_redirects=False, timeout=HTTP_TIMEOUT
    )
    assert stable.status_code == 303, (stable.status_code, stable.text)
    assert download(stable.headers["Location"]).content == body

    # the job list
    resp = requests.get(f"{base_url}/jobs", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    jobs = uws.parse_job_list(io.BytesIO(resp.content), pedantic=True)
    refs = {ref.jobid: ref for ref in jobs}
    assert job_id in refs, sorted(refs)
    assert refs[job_id].phase == "COMPLETED"
    # pyvo's JobSummary keeps no xlink:href for a jobref: read it directly
    ns = {"uws": UWS_NS, "xlink": XLINK_NS}
    root = ET.fromstring(resp.content)
    hrefs = {
        ref.get("id"): ref.get(f"{{{XLINK_NS}}}href")
        for ref in root.findall("uws:jobref", ns)
    }
    assert hrefs[job_id] == job_url


@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_pyvo_soda_query_gets_cutout_through_sync(base_url, post):
    query = soda_query(base_url, M31, circle=M31_CIRCLE)
    assert query["CIRCLE"].split() == [str(v) for v in M31_CIRCLE]
    data = read_soda_stream(query, post=post)
    with open_fits(data) as hdul:
        hdu = cutout_hdu(hdul)
        assert hdu.header["SKYCSRC"] == M31
        # 0.0178 deg radius at 1 arcsec/pixel: about 128 pixels across
        ny, nx = hdu.data.shape
        assert 100 <= nx <= 200 and 100 <= ny <= 200
        assert np.isfinite(hdu.data).any()


def test_pyvo_soda_range_and_polygon_get_cutouts_through_sync(base_url):
    ra, dec = M31_CENTRE
    d = 0.01
    rng = soda_query(base_url, M31)
    rng.range = (ra - d, ra + d, dec - d, dec + d)  # POS=RANGE ...
    assert rng["POS"].startswith("RANGE ")
    poly = soda_query(
        base_url, M31,
        polygon=(ra - d, dec - d, ra + d, dec - d, ra + d, dec + d,
                 ra - d, dec + d),
    )
    for query in (rng, poly):
        with open_fits(read_soda_stream(query)) as hdul:
            hdu = cutout_hdu(hdul)
            wcs = WCS(hdu.header)
            x, y = wcs.world_to_pixel_values(ra, dec)
            ny, nx = hdu.data.shape
            assert 0 <= x < nx and 0 <= y < ny


def test_sync_answers_204_when_stencil_misses_the_image(base_url):
    query = soda_query(base_url, M31, circle=(200.0, -30.0, 0.01))
    resp = query.submit()
    try:
        assert resp.status_code == 204, (resp.status_code, resp.text[:300])
        assert resp.content == b""
    finally:
        resp.close()


# (image id, RA offset, Dec offset) relative to the image's reference point:
# off-centre so that the test cannot pass by symmetry; the equator case
# crosses RA 0/360.
WCS_CASES = [
    ("m31", 0.0031, -0.0023),
    ("orion", -0.0047, 0.0019),
    ("equator", -0.0029, 0.0013),
]


@pytest.mark.parametrize("name,dra,ddec", WCS_CASES, ids=[c[0] for c in WCS_CASES])
def test_astropy_wcs_puts_requested_centre_at_source_sky_position(
    skycut, name, dra, ddec
):
    with fits.open(skycut.demo_dir / f"{name}.fits") as src_hdul:
        src_hdu = image_hdu(src_hdul)
        src_data = np.array(src_hdu.data)
        src_wcs = WCS(src_hdu.header)
    ref_ra, ref_dec = src_wcs.wcs.crval
    ra = float((ref_ra + dra) % 360.0)
    dec = float(ref_dec + ddec)
    circle = (ra, dec, 0.0125)

    query = soda_query(skycut.base_url, f"butler://demo/{name}", circle=circle)
    with open_fits(read_soda_stream(query)) as hdul:
        hdu = cutout_hdu(hdul)
        cut_data = np.array(hdu.data)
        header = hdu.header
    cut_wcs = WCS(header)
    x0 = int(header["SKYCX0"]) - 1  # 0-based source column of cutout pixel 0
    y0 = int(header["SKYCY0"]) - 1
    centre = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")

    # the requested centre maps to the same source pixel through both WCSs
    xs, ys = src_wcs.world_to_pixel_values(ra, dec)
    xc, yc = cut_wcs.world_to_pixel_values(ra, dec)
    assert abs((xc + x0) - xs) < 1e-6 and abs((yc + y0) - ys) < 1e-6
    ny, nx = cut_data.shape
    assert 0 <= xc < nx and 0 <= yc < ny

    # round trip through the cutout's WCS gives the centre back
    back_ra, back_dec = cut_wcs.pixel_to_world_values(xc, yc)
    back = SkyCoord(back_ra * u.deg, back_dec * u.deg, frame="icrs")
    assert back.separation(centre).deg < 1e-6

    # the pixel holding the centre: same sky position, same value
    ic, jc = int(np.round(xc)), int(np.round(yc))
    cra, cdec = cut_wcs.pixel_to_world_values(ic, jc)
    sra, sdec = src_wcs.pixel_to_world_values(ic + x0, jc + y0)
    sep = SkyCoord(cra * u.deg, cdec * u.deg).separation(
        SkyCoord(sra * u.deg, sdec * u.deg))
    assert sep.deg < 1e-6
    assert cut_data[jc, ic] == src_data[jc + y0, ic + x0]
    # and the whole cutout is the matching block of the source
    np.testing.assert_array_equal(
        cut_data, src_data[y0:y0 + ny, x0:x0 + nx]
    )


def test_pyvo_async_job_class_drives_cutout_job(base_url):
    job_url = create_job(base_url, ID=M31, CIRCLE=circle_text(M31_CIRCLE))
    job = AsyncTAPJob(job_url, delete=False)
    assert job.url == job_url
    assert job.job_id == job_url.rsplit("/", 1)[1]
    assert job.phase == "PENDING"
    assert job.uws_version == "1.1"
    assert job.destruction is not None
    assert job.execution_duration is not None

    job.run()
    job.wait(timeout=60)
    assert job.phase == "COMPLETED"
    job.raise_if_error()

    assert len(job.result_uris) == 1
    uri = job.result_uri
    assert uri == job.result_uris[0]
    assert job.result.id_ == "result"
    with open_fits(download(uri).content) as hdul:
        assert cutout_hdu(hdul).header["SKYCSRC"] == M31
    # (fetch_result() is TAP-specific: it parses a VOTable, so a FITS cutout
    # is fetched from result_uri instead.)

    job.delete()
    gone = requests.get(job_url, timeout=HTTP_TIMEOUT)
    assert gone.status_code == 404, (gone.status_code, gone.text)


def test_astronomer_script_runs_async_job_end_to_end(skycut):
    base_url = skycut.base_url
    ra, dec = 83.822083, -5.391111
    s = requests.Session()
    # one-shot creation: parameters and PHASE=RUN in one POST
    resp = s.post(
        f"{base_url}/jobs",
        data={"ID": "butler://demo/orion",
              "POS": f"CIRCLE {ra} {dec} 0.01", "PHASE": "RUN"},
        allow_redirects=False, timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 303, (resp.status_code, resp.text)
    job_url = resp.headers["Location"]

    phase = None
    for _ in range(MAX_POLLS):
        r = s.get(job_url, params={"WAIT": WAIT_S}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, (r.status_code, r.text)
        phase = uws.parse_job(io.BytesIO(r.content)).phase
        assert phase not in {"PENDING", "HELD", "SUSPENDED"}, phase
        if phase in FINAL_PHASES:
            break
    assert phase == "COMPLETED", phase

    r = s.get(f"{job_url}/results/result", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    with open_fits(r.content) as hdul:
        hdu = cutout_hdu(hdul)
        assert hdu.header["SKYCSRC"] == "butler://demo/orion"
        x, y = WCS(hdu.header).world_to_pixel_values(ra, dec)
        ny, nx = hdu.data.shape
        assert abs(x - (nx - 1) / 2) <= 1 and abs(y - (ny - 1) / 2) <= 1

    # clean up as a tidy script would: DELETE answers 303 to the job list
    d = s.delete(job_url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert d.status_code == 303, (d.status_code, d.text)
    assert d.headers["Location"] == f"{base_url}/jobs"
    assert s.get(job_url, timeout=HTTP_TIMEOUT).status_code == 404


def test_pyvo_surfaces_usage_error_text_for_bad_circle_on_sync(base_url):
    query = soda_query(base_url, M31)
    # pyvo's .circle setter validates locally; a raw value reaches the service
    query["CIRCLE"] = "10.684708 95 0.01"
    with pytest.raises(DALServiceError) as excinfo:
        read_soda_stream(query)
    err = excinfo.value
    assert err.code == 400
    assert re.search(r"UsageError: .*95", str(err)), str(err)

    # the same via plain requests: text/plain body starting with the label
    resp = requests.get(
        f"{base_url}/sync",
        params={"ID": M31, "CIRCLE": "10.684708 95 0.01"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text.startswith("UsageError: ")
