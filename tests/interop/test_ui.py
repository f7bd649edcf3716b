"""The web page at /api/cutout/, driven in a real browser.

Why this file exists: the page is for people, so it is tested as a person uses it: Debian's
headless chromium, driven through chromium-driver by Selenium, against the real ``skycut serve
--demo`` in ingress mode (the proxy's ``X-Auth-Request-User`` header is set on every request
the browser sends, as an authenticating ingress would). The tests submit a synchronous cutout
and check the preview's pixel size against the FITS cutout of the same job, follow an async job
from QUEUED to COMPLETED without a reload, check that another user does not see it, delete it,
and check the page's HTML (tidy), labels, alt texts and colour contrast. The form and the
buttons are also driven without JavaScript (plain HTTP, as a browser without scripts sends
them), and a cross-site form is refused.

Screenshots go to the test's temporary directory; with ``UPDATE_UI_SCREENSHOT=1`` the page's
screenshot also replaces ``docs/ui.png``, which the README shows.
"""

import io
import os
import re
import shutil
import subprocess
import uuid

import pytest
import requests
from astropy.io import fits

from conftest import REPO_ROOT, running_skycut

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

USER_HEADER = "X-Auth-Request-User"
WAIT_S = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("skycut-ui")
    with running_skycut(data_dir, ["--demo"], {"SKYCUT_AUTH__MODE": "ingress"}) as s:
        yield s


@pytest.fixture(scope="module")
def users():
    run = uuid.uuid4().hex[:8]
    return f"alice-{run}", f"bob-{run}"


@pytest.fixture(scope="module")
def browser():
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/install-deps")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1600", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver"))
    )
    driver.execute_cdp_cmd("Network.enable", {})
    try:
        yield driver
    finally:
        driver.quit()


def act_as(driver, user):
    """Every request the browser sends from now on carries the ingress's user header."""
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {USER_HEADER: user}}
    )


def page_url(server):
    return server.base_url + "/"


def wait(driver):
    # The script replaces a job's row whenever its phase is announced (also on connecting), so
    # an element found a moment ago may be gone: lookups are retried.
    return WebDriverWait(
        driver, WAIT_S, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]
    )


def open_page(driver, server, user):
    act_as(driver, user)
    driver.get(page_url(server))
    wait(driver).until(ec.presence_of_element_located((By.ID, "cutout")))
    # The live stream is connected once the page says so.
    wait(driver).until(
        lambda d: "live" in d.find_element(By.ID, "live").text.lower()
    )


def fill_form(driver, radius="30", fmt="PNG"):
    radius_field = driver.find_element(By.ID, "radius")
    radius_field.clear()
    radius_field.send_keys(radius)
    driver.find_element(By.ID, f"format-{fmt.lower()}").click()


def screenshot(driver, tmp_path, name):
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def fetch(server, user, path, **kwargs):
    return requests.get(server.base_url + path, headers={USER_HEADER: user}, **kwargs)


def test_sync_cutout_shows_a_preview_the_size_of_the_fits_cutout(
    server, users, browser, tmp_path
):
    alice, _ = users
    open_page(browser, server, alice)
    fill_form(browser, radius="40", fmt="PNG")
    browser.find_element(By.CSS_SELECTOR, "button[value=sync]").click()
    preview = wait(browser).until(ec.presence_of_element_located((By.ID, "preview")))
    wait(browser).until(
        lambda d: d.execute_script(
            "const i = arguments[0]; return i.complete && i.naturalWidth > 0;", preview
        )
    )
    width, height = browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight];", preview
    )
    assert preview.get_attribute("alt").startswith("Preview of the cutout")
    fits_url = browser.find_element(By.ID, "fits-link").get_attribute("href")
    cutout = requests.get(fits_url, headers={USER_HEADER: alice}, timeout=WAIT_S)
    assert cutout.status_code == 200, cutout.text
    with fits.open(io.BytesIO(cutout.content)) as hdus:
        image = next(h for h in hdus if h.header.get("NAXIS") == 2)
        assert (width, height) == (image.header["NAXIS1"], image.header["NAXIS2"])
    # The script says the size the browser decoded.
    assert browser.find_element(By.ID, "preview-size").text == f"{width} × {height} pixels."
    shot = screenshot(browser, tmp_path, "sync-cutout")
    if os.environ.get("UPDATE_UI_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO_ROOT / "docs" / "ui.png")


def test_a_bad_position_shows_the_services_dali_message(server, users, browser, tmp_path):
    alice, _ = users
    open_page(browser, server, alice)
    declination = browser.find_element(By.ID, "dec")
    declination.clear()
    declination.send_keys("95")
    browser.find_element(By.CSS_SELECTOR, "button[value=sync]").click()
    error = wait(browser).until(ec.presence_of_element_located((By.ID, "error")))
    assert error.text.startswith("UsageError: Dec \"95\" is not between -90 and 90")
    # The form keeps what was typed.
    assert browser.find_element(By.ID, "dec").get_attribute("value") == "95"
    screenshot(browser, tmp_path, "error")


def row_phase(driver, job_id):
    return driver.find_element(By.ID, f"job-{job_id}").get_attribute("data-phase")


def test_async_job_goes_from_queued_to_completed_without_a_reload_and_only_its_owner_sees_it(
    server, users, browser, tmp_path
):
    alice, bob = users
    open_page(browser, server, alice)
    fill_form(browser, radius="20", fmt="FITS")
    run_id = f"ui-{uuid.uuid4().hex[:6]}"
    browser.find_element(By.ID, "runid").send_keys(run_id)
    # Created PENDING, so that the run can be watched from the start.
    start = browser.find_element(By.ID, "run")
    if start.is_selected():
        start.click()
    browser.find_element(By.CSS_SELECTOR, "button[value=async]").click()
    wait(browser).until(lambda d: "#job-" in d.current_url)
    job_id = browser.current_url.split("#job-", 1)[1]
    wait(browser).until(
        lambda d: "live" in d.find_element(By.ID, "live").text.lower()
    )
    row_text = wait(browser).until(lambda d: d.find_element(By.ID, f"job-{job_id}").text)
    assert row_phase(browser, job_id) == "PENDING"
    assert run_id in row_text and "CIRCLE=" in row_text
    # Every phase the row shows from now on is recorded; the marker dies with a reload.
    browser.execute_script(
        """
        window.uiMarker = 'same page';
        window.phasesSeen = [];
        const rows = document.getElementById('job-rows');
        const record = () => {
          const row = document.getElementById('job-' + arguments[0]);
          const phase = row && row.querySelector('span.phase').textContent;
          if (phase && window.phasesSeen[window.phasesSeen.length - 1] !== phase) {
            window.phasesSeen.push(phase);
          }
        };
        new MutationObserver(record).observe(rows, {subtree: true, childList: true,
          characterData: true, attributes: true});
        """,
        job_id,
    )
    wait(browser).until(
        lambda d: d.find_element(
            By.CSS_SELECTOR, f"#job-{job_id} button[aria-label^=Run]"
        ).click() or True
    )
    wait(browser).until(lambda d: row_phase(d, job_id) == "COMPLETED")
    seen = browser.execute_script("return window.phasesSeen;")
    assert seen[0] == "QUEUED" and seen[-1] == "COMPLETED", seen
    assert browser.execute_script("return window.uiMarker;") == "same page"
    href = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"#job-{job_id} ul.results a")
        .get_attribute("href")
    )
    result = requests.get(href, headers={USER_HEADER: alice}, timeout=WAIT_S)
    assert result.content[:6] == b"SIMPLE"
    screenshot(browser, tmp_path, "job-completed")

    # Another user sees neither the row nor the job.
    open_page(browser, server, bob)
    assert not browser.find_elements(By.ID, f"job-{job_id}")
    assert fetch(server, bob, f"/ui/jobs/{job_id}").status_code == 404
    assert fetch(server, bob, f"/jobs/{job_id}").status_code == 404
    screenshot(browser, tmp_path, "other-user")

    # The owner deletes it; the row goes without a reload.
    open_page(browser, server, alice)
    browser.execute_script("window.uiMarker = 'same page';")
    wait(browser).until(
        lambda d: d.find_element(
            By.CSS_SELECTOR, f"#job-{job_id} button[aria-label^=Delete]"
        ).click() or True
    )
    wait(browser).until(lambda d: not d.find_elements(By.ID, f"job-{job_id}"))
    assert browser.execute_script("return window.uiMarker;") == "same page"
    assert fetch(server, alice, f"/jobs/{job_id}").status_code == 404


def test_uws_documents_name_the_stylesheet_and_render_in_the_browser(
    server, users, browser, tmp_path
):
    alice, _ = users
    listing = fetch(server, alice, "/jobs")
    assert listing.status_code == 200
    href = re.search(r'<\?xml-stylesheet type="text/xsl" href="([^"]+)"\?>', listing.text)
    assert href and href.group(1) == server.base_url + "/ui/uws.xsl", listing.text[:300]
    xsl = fetch(server, alice, "/ui/uws.xsl")
    assert xsl.status_code == 200 and "xsl:stylesheet" in xsl.text
    act_as(browser, alice)
    browser.get(server.base_url + "/jobs")
    heading = wait(browser).until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert heading.text == "UWS jobs"
    screenshot(browser, tmp_path, "uws-jobs")


# What a person needs from every page: each form control labelled, each image described,
# each button named, and text that contrasts with its background by 4.5:1 at least (WCAG AA).
ACCESSIBILITY_AUDIT = """
const problems = [];
const visible = (e) => e.getClientRects().length > 0;
for (const c of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  const labelled = (c.id && document.querySelector('label[for="' + c.id + '"]'))
    || c.getAttribute('aria-label') || c.closest('label');
  if (!labelled) problems.push('unlabelled control ' + (c.id || c.name));
}
for (const i of document.querySelectorAll('img')) {
  if (!i.getAttribute('alt')) problems.push('image without alt ' + i.src);
}
for (const b of document.querySelectorAll('button, progress')) {
  if (!(b.textContent.trim() || b.getAttribute('aria-label'))) {
    problems.push('unnamed ' + b.tagName);
  }
}
const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
const luminance = ([r, g, b]) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = (e) => {
  for (; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
let checked = 0;
for (const e of document.body.querySelectorAll('*')) {
  const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !visible(e)) continue;
  const a = luminance(rgb(getComputedStyle(e).color)), b = luminance(background(e));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked++;
  if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' of ' + e.tagName + ' "' + e.textContent.trim().slice(0, 30) + '"');
}
return [problems, checked];
"""


def test_the_page_is_accessible(server, users, browser):
    alice, _ = users
    open_page(browser, server, alice)
    problems, checked = browser.execute_script(ACCESSIBILITY_AUDIT)
    assert checked > 20
    assert problems == []
    # The keyboard walks the page in reading order: the skip link, the header's links, then
    # the form's fields from the top.
    order = []
    for _ in range(8):
        webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        order.append(active.get_attribute("id") or active.text)
    assert order == ["Skip to my jobs", "capabilities", "OpenAPI", "UWS job list",
                     "image", "ra", "dec", "radius"], order


def tidy_problems(html):
    done = subprocess.run(
        # Empty elements are placeholders the script fills (the live status, the preview size).
        ["tidy", "-q", "-e", "--show-warnings", "yes", "--drop-empty-elements", "no"],
        input=html.encode(), capture_output=True, check=False,
    )
    return done.stderr.decode()


def form_post(server, user, path, data, origin=None):
    headers = {USER_HEADER: user, "Origin": origin or server.base_url.split("/api/")[0]}
    return requests.post(
        server.base_url + path, data=data, headers=headers, allow_redirects=False,
        timeout=WAIT_S,
    )


def test_without_javascript_the_form_and_buttons_work_and_the_html_is_valid(server, users):
    if shutil.which("tidy") is None:
        pytest.fail("tidy is missing: run scripts/install-deps")
    alice, _ = users
    page = fetch(server, alice, "/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert tidy_problems(page.text) == ""
    image = re.search(r'<input id="image" type="text" name="ID" value="([^"]+)"', page.text)
    ra = re.search(r'name="RA" value="([^"]+)"', page.text)
    dec = re.search(r'name="DEC" value="([^"]+)"', page.text)
    assert image and ra and dec, "the form is not prefilled from the sky index"
    form = {"ID": image.group(1), "RA": ra.group(1), "DEC": dec.group(1), "RADIUS": "20",
            "FORMAT": "JPEG", "MODE": "sync"}
    cut = form_post(server, alice, "/ui/cutout", form)
    assert cut.status_code == 200, cut.text
    assert tidy_problems(cut.text) == ""
    preview = re.search(r'<img id="preview" src="([^"]+)"', cut.text)
    assert preview
    jpeg = requests.get(preview.group(1), headers={USER_HEADER: alice}, timeout=WAIT_S)
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"

    job = form_post(server, alice, "/ui/cutout", {**form, "MODE": "async"})
    assert job.status_code == 303
    job_id = job.headers["location"].split("#job-", 1)[1]
    row = fetch(server, alice, f"/ui/jobs/{job_id}")
    assert row.status_code == 200 and f'id="job-{job_id}"' in row.text

    # Another site's form is refused and changes nothing.
    forged = form_post(server, alice, f"/ui/jobs/{job_id}", {"ACTION": "DELETE"},
                       origin="https://elsewhere.example")
    assert forged.status_code == 403
    assert forged.text.startswith("AuthorizationError:")
    assert fetch(server, alice, f"/jobs/{job_id}").status_code == 200
    deleted = form_post(server, alice, f"/ui/jobs/{job_id}", {"ACTION": "DELETE"})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == server.base_url + "/#jobs"
    assert fetch(server, alice, f"/jobs/{job_id}").status_code == 404


def test_stil_reads_a_job_document_that_names_the_stylesheet(base_url):
    """STIL's UWS client (behind TOPCAT's TAP window) reads the job document, stylesheet
    instruction included: it follows the job to COMPLETED and fetches the result, which it then
    refuses only because a cutout is FITS where TAP expects a VOTable."""
    if shutil.which("stilts") is None:
        pytest.fail("stilts is missing: run scripts/install-deps")
    created = requests.post(
        f"{base_url}/jobs", allow_redirects=False, timeout=WAIT_S,
        data={"ID": "butler://demo/m31", "CIRCLE": "10.684708 41.26875 0.01", "PHASE": "RUN"},
    )
    assert created.status_code == 303
    job = created.headers["location"]
    document = requests.get(job, params={"WAIT": "30", "PHASE": "QUEUED"}, timeout=60).text
    assert "<?xml-stylesheet" in document
    done = subprocess.run(
        ["stilts", "tapresume", f"joburl={job}", "delete=never"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert "TAP response is not a VOTable - SIMPLE" in done.stdout + done.stderr, (
        done.stdout + done.stderr
    )
