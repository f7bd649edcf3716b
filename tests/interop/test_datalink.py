"""DataLink interop: pyvo reads Skycut's ``{links}`` document and cuts out
through the SODA service descriptor in it.

Why this file exists: an astronomer reaches a cutout service from an ObsTAP
row whose ``access_url`` is a DataLink document; pyvo then looks for a
``#this`` row, a processing row (``service_def``) and an ``adhoc:service``
resource with a SODA sync standardID, and builds a ``SodaQuery`` from its
``inputParams``. These tests run exactly those pyvo code paths against the
real binary, so a descriptor pyvo cannot use fails here. The last test does
the same with the STIL classes behind TOPCAT's DataLink window.
"""

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from pyvo.dal.adhoc import DatalinkQuery, DatalinkResults, SodaQuery
from pyvo.dal.exceptions import DALQueryError, DALServiceError

from conftest import assert_datalinklint_passes

M31 = "butler://demo/m31"
ORION = "butler://demo/orion"
UNKNOWN = "butler://demo/nothing"
M31_CENTRE = (10.684708, 41.26875)
# The demo images are 512 x 512 one-arcsecond pixels: the enclosing radius is
# half the diagonal, less a little for the TAN projection (tan r ~ r + r^3/3).
HALF_DIAGONAL_DEG = 256 * np.sqrt(2) / 3600


def links_url(base_url, ident=M31):
    return f"{base_url}/links?ID={ident}"


def open_stream(stream):
    try:
        return fits.open(io.BytesIO(stream.read()))
    finally:
        stream.close()


def input_params(resource):
    group = next(g for g in resource.groups if g.name == "inputParams")
    return {p.name: p for p in group.entries}


def test_pyvo_datalink_query_finds_the_soda_descriptor_with_the_footprint(
    base_url,
):
    links = DatalinkQuery(f"{base_url}/links", id=M31).execute()
    assert isinstance(links, DatalinkResults)
    assert sorted(links["semantics"]) == ["#cutout", "#preview", "#this"]
    proc = links.get_first_proc()
    assert proc.semantics == "#cutout"
    assert proc.service_def == "cutout"
    # A processing row has no access_url of its own: pyvo takes the
    # descriptor's accessURL.
    assert proc.access_url == f"{base_url}/sync"

    resource = links.get_adhocservice_by_ivoid("ivo://ivoa.net/std/SODA#sync-1")
    assert resource.ID == "cutout"
    params = input_params(resource)
    assert set(params) == {
        "ID", "POS", "CIRCLE", "POLYGON", "MOC", "RESPONSEFORMAT", "MASK"}
    # The ID comes from the row.
    assert params["ID"].ref == "ID"
    assert [value for _, value in params["RESPONSEFORMAT"].values.options] == [
        "application/fits", "image/png", "image/jpeg"]
    circle_max = np.asarray(params["CIRCLE"].values.max, dtype=float)
    assert circle_max[:2] == pytest.approx(M31_CENTRE, abs=1e-6)
    assert circle_max[2] == pytest.approx(HALF_DIAGONAL_DEG, rel=1e-5)
    polygon_max = np.asarray(params["POLYGON"].values.max, dtype=float)
    assert polygon_max.shape == (8,)
    centre = SkyCoord(*M31_CENTRE, unit="deg")
    corners = SkyCoord(polygon_max[0::2], polygon_max[1::2], unit="deg")
    assert centre.separation(corners).deg == pytest.approx(
        [HALF_DIAGONAL_DEG] * 4, rel=1e-3
    )


def test_pyvo_soda_query_from_the_descriptor_runs_a_cutout(base_url):
    links = DatalinkResults.from_result_url(links_url(base_url))
    proc = links.get_first_proc()
    resource = links.get_adhocservice_by_id(proc.service_def)
    radius = 20 / 3600
    query = SodaQuery.from_resource(
        proc, resource, circle=(*M31_CENTRE, radius) * u.deg
    )
    assert query["ID"] == M31
    with open_stream(query.execute_stream()) as hdul:
        hdu = hdul["CUTOUT"]
        assert hdu.header["SKYCSRC"] == M31
        ny, nx = hdu.data.shape
        assert 39 <= nx <= 42 and 39 <= ny <= 42, hdu.data.shape
        sky = WCS(hdu.header).pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
        assert sky.separation(SkyCoord(*M31_CENTRE, unit="deg")).arcsec < 1.5


def test_pyvo_processed_row_cuts_out_through_the_descriptor(base_url):
    links = DatalinkResults.from_result_url(links_url(base_url))
    proc = links.get_first_proc()
    # processed() finds the SODA resource by standardID, as for any
    # DataLink row a TAP query returned.
    stream = proc.processed(circle=(*M31_CENTRE, 10 / 3600) * u.deg)
    with open_stream(stream) as hdul:
        assert hdul["CUTOUT"].header["SKYCSRC"] == M31


def test_pyvo_getdataset_fetches_the_whole_image(base_url, skycut):
    links = DatalinkResults.from_result_url(links_url(base_url))
    # DatalinkResults.getdataset() would first download the IVOA datalink/core
    # vocabulary to widen "#this" to its narrower terms; this machine has no
    # internet, so the row is taken with the exact term, then fetched by pyvo.
    this = next(links.bysemantics("#this", include_narrower=False))
    with open_stream(this.getdataset()) as hdul:
        data = hdul["CUTOUT"].data
    with fits.open(skycut.demo_dir / "m31.fits") as source:
        assert np.array_equal(data, source[0].data)


def test_pyvo_reports_an_unknown_image_with_its_name(base_url):
    links = DatalinkQuery(f"{base_url}/links", id=UNKNOWN).execute()
    [row] = list(links)
    assert row.error_message.startswith("NotFoundFault: ")
    assert UNKNOWN in row.error_message
    with pytest.raises(DALServiceError) as raised:
        row.getdataurl()
    assert UNKNOWN in str(raised.value)


@pytest.mark.parametrize("post", [False, True])
def test_pyvo_datalink_with_several_ids_answers_each_with_rows_or_an_error(
    base_url, post
):
    ids = [M31, UNKNOWN, ORION]
    links = DatalinkQuery(f"{base_url}/links", id=ids).execute(post=post)
    assert [(r["ID"], r.semantics) for r in links] == [
        (M31, "#this"), (M31, "#preview"), (M31, "#cutout"),
        (UNKNOWN, "#this"),
        (ORION, "#this"), (ORION, "#preview"), (ORION, "#cutout"),
    ]
    unknown = links.clone_byid(UNKNOWN)
    assert next(iter(unknown)).error_message.startswith("NotFoundFault: ")
    # Each image's own descriptor carries its footprint; a cutout through it
    # comes from that image.
    for ident in (M31, ORION):
        one = links.clone_byid(ident)
        proc = one.get_first_proc()
        resource = one.get_adhocservice_by_id(proc.service_def)
        centre = np.asarray(
            input_params(resource)["CIRCLE"].values.max, dtype=float)[:2]
        query = SodaQuery.from_resource(
            proc, resource, circle=(*centre, 10 / 3600) * u.deg)
        assert query["ID"] == ident
        with open_stream(query.execute_stream()) as hdul:
            assert hdul["CUTOUT"].header["SKYCSRC"] == ident


def test_pyvo_preview_row_is_a_png_of_the_whole_image(base_url):
    links = DatalinkResults.from_result_url(links_url(base_url))
    preview = next(links.bysemantics("#preview", include_narrower=False))
    assert preview.content_type == "image/png"
    stream = preview.getdataset()
    try:
        png = stream.read()
    finally:
        stream.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"),
            int.from_bytes(png[20:24], "big")) == (512, 512)


# TOPCAT's DataLink window is built on STIL's uk.ac.starlink.vo.datalink;
# the Debian stilts package (scripts/install-deps) ships those classes.
STIL_JARS = ["starlink-vo", "starlink-votable", "starlink-table",
             "starlink-util", "starlink-fits", "starlink-connect"]
TOPCAT_DATALINK = Path(__file__).with_name("TopcatDatalink.java")


def run_topcat_datalink(url, circle):
    jars = [Path("/usr/share/java") / f"{name}.jar" for name in STIL_JARS]
    missing = [str(j) for j in jars if not j.is_file()]
    assert not missing and shutil.which("java"), (
        f"STIL jars {missing} or java missing: run scripts/install-deps")
    result = subprocess.run(
        ["java", "-cp", ":".join(str(j) for j in jars),
         str(TOPCAT_DATALINK), url, circle],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(": ")
        facts.setdefault(key, []).append(value)
    return facts


def test_topcat_datalink_classes_build_a_cutout_form_and_invoke_it(base_url):
    radius = 15 / 3600
    facts = run_topcat_datalink(
        links_url(base_url), f"{M31_CENTRE[0]} {M31_CENTRE[1]} {radius}")
    assert facts["rows"] == ["3"]
    assert facts["descriptor"] == [
        f"cutout ivo://ivoa.net/std/SODA#sync-1.0 {base_url}/sync"]
    # ID comes from the row (ref), so the form does not ask for it.
    assert facts["row param"] == ["ID"]
    user = {line.split()[0]: line for line in facts["user param"]}
    assert set(user) == {"POS", "CIRCLE", "POLYGON", "MOC", "RESPONSEFORMAT", "MASK"}
    assert "xtype=circle max=10.684708 41.26875 " in user["CIRCLE"]
    assert "xtype=polygon max=" in user["POLYGON"]
    [url] = facts["invoke"]
    resp = requests.get(url, timeout=60)
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
    with fits.open(io.BytesIO(resp.content)) as hdul:
        assert hdul["CUTOUT"].header["SKYCSRC"] == M31
        assert 29 <= hdul["CUTOUT"].data.shape[0] <= 32


def test_stilts_votlint_finds_nothing_wrong_in_the_links_document(base_url):
    # votlint checks what the schema cannot: values against datatype and
    # arraysize, xtypes, VALUES. It reports on stdout/stderr and exits 0.
    doc = requests.get(links_url(base_url), timeout=60).text
    result = subprocess.run(
        ["stilts", "votlint", "votable=-"], input=doc,
        capture_output=True, text=True, timeout=120,
    )
    report = [line for line in (result.stdout + result.stderr).splitlines()
              if line.startswith(("ERROR", "WARNING"))]
    assert result.returncode == 0 and not report, report or result.stderr


def test_stilts_datalinklint_passes_a_document_with_several_ids_one_unknown(
    base_url,
):
    # datalinklint checks the DataLink 1.1 rules themselves: columns, error
    # rows, service descriptors and their parameters (W-SAVV-1 is VALUES
    # beside a ref), and fetches nothing.
    doc = requests.get(
        f"{base_url}/links",
        params=[("ID", M31), ("ID", UNKNOWN), ("ID", ORION)], timeout=60,
    ).text
    assert_datalinklint_passes(doc)
