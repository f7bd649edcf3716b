"""SODA ``TIME``, ``POL`` and ``MOC`` as pyvo sends them, checked with astropy.

Why this file exists: the axis parameters are only useful if the clients
astronomers use can drive them. This suite writes, with astropy, a cube with a
Stokes axis (I Q U V) and a time axis (three exposures an hour apart), a 2-D
image observed for two hours (DATE-OBS + EXPTIME) and one with no date, serves
them with ``skycut serve``, and through pyvo's ``SodaQuery`` (``time``,
``pol``, and a raw ``MOC``, whose geometry the e2e suite checks) and the DataLink descriptor
(``DatalinkResults.get_first_proc``) checks which planes and images come back;
then runs ``stilts datalinklint`` on a links document of these images and an
unknown ID.
"""

import io

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from pyvo.dal.adhoc import DatalinkResults, SodaQuery

from conftest import assert_datalinklint_passes, running_skycut

REPOSITORY = "axes"
CUBE = f"butler://{REPOSITORY}/stokes"
DATED = f"butler://{REPOSITORY}/dated"
UNDATED = f"butler://{REPOSITORY}/undated"
RA, DEC = 150.0, 2.0
SCALE = 1 / 3600
HTTP_TIMEOUT = 60
FIRST = Time("2024-01-01T00:00:00", scale="utc")
OBSERVED = Time("2023-06-15T06:00:00", scale="utc")


def celestial(h, nx, ny):
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    h["CRVAL1"], h["CRVAL2"] = RA, DEC
    h["CDELT1"], h["CDELT2"] = -SCALE, SCALE
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["RADESYS"] = "ICRS"


def write_images(directory):
    # 64 x 48, Stokes I Q U V, 3 exposures: every pixel of plane (s, t) holds 10 t + s.
    h = fits.Header()
    celestial(h, 64, 48)
    h["CTYPE3"], h["CRPIX3"], h["CRVAL3"], h["CDELT3"] = "STOKES", 1.0, 1.0, 1.0
    h["CTYPE4"], h["CUNIT4"] = "TIME", "s"
    h["CRPIX4"], h["CRVAL4"], h["CDELT4"] = 1.0, 0.0, 3600.0
    h["MJDREF"] = FIRST.mjd
    planes = np.array([[10 * t + s for s in range(4)] for t in range(3)], np.float32)
    data = np.broadcast_to(planes[:, :, None, None], (3, 4, 48, 64)).copy()
    fits.PrimaryHDU(data, h).writeto(directory / "stokes.fits")
    for name, date in [("dated", OBSERVED), ("undated", None)]:
        h = fits.Header()
        celestial(h, 100, 100)
        if date is not None:
            h["DATE-OBS"] = date.isot
            h["EXPTIME"] = 7200.0
        data = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
        fits.PrimaryHDU(data, h).writeto(directory / f"{name}.fits")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    images = tmp_path_factory.mktemp("axes-images")
    write_images(images)
    data_dir = tmp_path_factory.mktemp("axes-data")
    with running_skycut(data_dir, ["--repository", f"{REPOSITORY}={images}"]) as s:
        yield s


def query(server, image, **kwargs):
    return SodaQuery(f"{server.base_url}/sync", id=image,
                     circle=(RA, DEC, 5 * SCALE) * u.deg, **kwargs)


def planes(query):
    """The cutout's shape and the plane numbers (10 t + s) it holds, in order."""
    hdus = fits.open(io.BytesIO(query.execute_stream().read()))
    data = hdus["CUTOUT"].data
    return data.shape, [float(p[0, 0]) for p in data.reshape(-1, *data.shape[-2:])]


def test_pyvo_time_keeps_the_exposures_of_a_time_axis_it_holds(server):
    q = query(server, CUBE)
    q.time.add((FIRST + 30 * u.min, FIRST + 3 * u.hour))
    shape, held = planes(q)
    assert shape[:2] == (2, 4)
    assert held == [10, 11, 12, 13, 20, 21, 22, 23]


def test_pyvo_pol_values_form_one_filter_kept_in_axis_order(server):
    q = query(server, CUBE)
    q.pol.add("U")
    q.pol.add("Q")
    q.time.add((FIRST, FIRST))
    shape, held = planes(q)
    assert shape[:2] == (1, 2)
    assert held == [1, 2]
    # The cutout's Stokes axis still says which plane is which.
    hdu = fits.open(io.BytesIO(q.execute_stream().read()))["CUTOUT"]
    stokes = WCS(hdu.header).sub([3])
    assert [round(float(v)) for v in stokes.pixel_to_world_values([0, 1])] == [2, 3]


def test_pyvo_time_keeps_or_rejects_a_dated_image_by_its_observation(server):
    hit = query(server, DATED)
    hit.time.add((OBSERVED + 1 * u.hour, OBSERVED + 5 * u.hour))
    shape, _ = planes(hit)
    assert len(shape) == 2 and min(shape) >= 10, shape
    miss = query(server, DATED)
    miss.time.add((OBSERVED + 3 * u.hour, OBSERVED + 5 * u.hour))
    r = requests.get(miss.baseurl, params=miss, timeout=HTTP_TIMEOUT)
    assert r.status_code == 204, r.text


@pytest.mark.parametrize("image, params, problem", [
    (UNDATED, {"TIME": "60000 60001"}, "neither a time axis nor an observation time"),
    (DATED, {"TIME": "yesterday today"}, "TIME value"),
    (DATED, {"POL": "I"}, "no polarization axis"),
    (CUBE, {"POL": "POLI"}, "FITS Stokes code"),
])
def test_bad_time_and_pol_are_usage_errors_naming_the_problem(server, image, params, problem):
    r = requests.get(f"{server.base_url}/sync",
                     params={"ID": image, "CIRCLE": f"{RA} {DEC} 0.001", **params},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert r.text.startswith("UsageError: ") and problem in r.text, r.text


def test_moc_of_the_whole_sky_cuts_the_whole_image_and_a_bad_moc_is_a_usage_error(server):
    # pyvo has no MOC attribute yet: the parameter goes as the SODA draft spells it.
    q = SodaQuery(f"{server.base_url}/sync", id=DATED, moc="0/0-11", mask="true")
    hdus = fits.open(io.BytesIO(q.execute_stream().read()))
    source = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    assert np.array_equal(hdus["CUTOUT"].data, source)
    r = requests.get(f"{server.base_url}/sync", params={"ID": DATED, "MOC": "3/1-"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.text.startswith("UsageError: MOC"), r.text


def test_datalink_descriptor_offers_time_and_pol_and_runs_them_through_pyvo(server):
    links = DatalinkResults.from_result_url(
        f"{server.base_url}/links?ID={CUBE}")
    proc = links.get_first_proc()
    resource = links.get_adhocservice_by_id(proc.service_def)
    params = {p.name: p for p in resource.params}
    group = {p.name: p for p in resource.groups[0].entries}
    assert {"TIME", "POL", "MOC"} <= set(group), sorted(group)
    assert [o[1] for o in group["POL"].values.options] == ["I", "Q", "U", "V"]
    lo, hi = float(group["TIME"].values.min), float(group["TIME"].values.max)
    assert abs(lo - (FIRST.mjd - 0.5 / 24)) < 1e-9 and abs(hi - (FIRST.mjd + 2.5 / 24)) < 1e-9
    assert params["standardID"].value.startswith("ivo://ivoa.net/std/SODA#sync")
    q = SodaQuery.from_resource(proc, resource, circle=(RA, DEC, 5 * SCALE) * u.deg)
    q.pol.add("V")
    shape, held = planes(q)
    assert shape[:2] == (3, 1)
    assert held == [3, 13, 23]


def test_stilts_datalinklint_passes_a_document_with_time_pol_and_an_unknown_id(server):
    doc = requests.get(
        f"{server.base_url}/links",
        params=[("ID", CUBE), ("ID", f"butler://{REPOSITORY}/nothing"), ("ID", DATED),
                ("ID", UNDATED)],
        timeout=HTTP_TIMEOUT,
    ).text
    assert 'name="TIME"' in doc and 'name="POL"' in doc and 'name="MOC"' in doc
    assert_datalinklint_passes(doc)
