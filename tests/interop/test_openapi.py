"""The OpenAPI description, checked by the tools an API consumer uses.

Why this file exists: ``/api/cutout/openapi.json`` is generated from the
handlers' annotations; openapi-spec-validator checks it is a valid OpenAPI
document, and schemathesis sends a bounded number of generated requests to
every described operation and checks that none is a server error and that
every status code and content type it gets back is one the description
promises.
"""

import subprocess
import sys
from pathlib import Path

import requests
from openapi_spec_validator import validate

HTTP_TIMEOUT = 60
# Generated requests per operation: enough to find crashes on odd input,
# bounded so that the whole run takes well under a minute on 2 cores.
MAX_EXAMPLES = 15
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])


def test_openapi_document_is_valid(base_url):
    resp = requests.get(f"{base_url}/openapi.json", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    validate(resp.json())


def completed_job(base_url):
    """A finished cutout job, so that generated requests to job routes reach
    a real job instead of a 404."""
    resp = requests.post(
        f"{base_url}/jobs", allow_redirects=False, timeout=HTTP_TIMEOUT,
        data={"ID": "butler://demo/m31",
              "CIRCLE": "10.684708 41.26875 0.0178", "PHASE": "RUN"},
    )
    assert resp.status_code == 303, resp.text
    job_url = resp.headers["Location"]
    for _ in range(10):
        phase = requests.get(
            f"{job_url}/phase", timeout=HTTP_TIMEOUT).text
        if phase not in ("QUEUED", "EXECUTING"):
            break
        requests.get(job_url, params={"WAIT": 10}, timeout=HTTP_TIMEOUT)
    assert phase == "COMPLETED", phase
    return job_url.rsplit("/", 1)[1]


def test_schemathesis_finds_no_server_error_and_no_undescribed_response(
    base_url, tmp_path
):
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.id" = "{completed_job(base_url)}"\n'
        '"path.result" = "result"\n'
    )
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis), "--config-file", str(config),
            "run", f"{base_url}/openapi.json",
            "--url", base_url,
            "--checks", CHECKS,
            "--max-examples", str(MAX_EXAMPLES),
            "--phases", "examples,coverage,fuzzing",
            "--seed", "7",
            # More than one worker trips a thread-safety bug in Hypothesis's
            # source inspection ("AST constructor recursion depth mismatch").
            "--workers", "1",
            # Deleting the job would turn every later request into a 404;
            # deletion has its own end-to-end tests.
            "--exclude-operation-id", "delete_job",
            "--exclude-operation-id", "post_job",
            # The page's job buttons include ACTION=DELETE (tests/ui.rs and test_ui.py).
            "--exclude-operation-id", "ui_job_action",
            # The event stream never ends by design (tests/events.rs covers it).
            "--exclude-operation-id", "job_events",
            "--request-timeout", "60",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " 0 passed" not in result.stdout, result.stdout[-3000:]
