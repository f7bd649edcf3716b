"""Fixtures for Skycut's Python interop suite.

Why this file exists: the interop tests must talk to the real ``skycut``
binary exactly as astronomers' clients (pyvo, astropy, requests) do, so this
module starts one ``skycut serve --demo`` process for the whole session on a
free loopback port, learns its base URL from the first stdout line, and makes
sure the process is killed at the end, also when a test or the start-up fails.
"""

import contextlib
import os
import queue
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "skycut"
STARTUP_TIMEOUT_S = 60
LISTEN_RE = re.compile(r"^skycut listening on (http://\S+)\s*$")


@dataclass(frozen=True)
class Skycut:
    """A running skycut server."""

    base_url: str  # .../api/cutout, without a trailing slash
    data_dir: Path
    demo_dir: Path
    stdout_lines: list


def _pump(stream, lines, first_line):
    """Drain the child's stdout forever so the pipe never fills."""
    try:
        for raw in iter(stream.readline, ""):
            line = raw.rstrip("\n")
            lines.append(line)
            if len(lines) == 1:
                first_line.put(line)
    finally:
        first_line.put(None)  # EOF marker (ignored if a line came first)
        stream.close()


@contextlib.contextmanager
def running_skycut(data_dir, extra_args, settings=None):
    """Runs ``skycut serve`` with ``extra_args`` (image sources) until the block ends.

    ``settings`` maps configuration variables (``SKYCUT_AUTH__MODE``) to values.
    """
    binary = Path(os.environ.get("SKYCUT_BIN", str(DEFAULT_BIN)))
    if not binary.is_file():
        pytest.fail(
            f"skycut binary not found at {binary}: run `cargo build` "
            "or set SKYCUT_BIN"
        )
    stderr_path = data_dir.parent / f"{data_dir.name}-stderr.log"
    stderr_file = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        # SKYCUT_BIN tells this suite where the binary is; skycut would read it as a
        # configuration key (every SKYCUT_* variable is one) and refuse it.
        env={
            **{k: v for k, v in os.environ.items() if k != "SKYCUT_BIN"},
            **(settings or {}),
        },
    )
    lines = []
    first_line = queue.Queue()
    pump = threading.Thread(
        target=_pump, args=(proc.stdout, lines, first_line), daemon=True
    )
    pump.start()
    try:
        try:
            line = first_line.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            line = None
        match = LISTEN_RE.match(line or "")
        if not match:
            stderr_file.flush()
            pytest.fail(
                f"skycut did not announce its URL (first stdout line {line!r}, "
                f"exit code {proc.poll()}); stderr:\n"
                + stderr_path.read_text(errors="replace")[-4000:]
            )
        yield Skycut(
            base_url=match.group(1).rstrip("/"),
            data_dir=data_dir,
            demo_dir=data_dir / "demo",
            stdout_lines=lines,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        pump.join(timeout=10)
        stderr_file.close()


@pytest.fixture(scope="session")
def skycut(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("skycut-data")
    with running_skycut(data_dir, ["--demo"]) as server:
        yield server


@pytest.fixture(scope="session")
def base_url(skycut):
    return skycut.base_url


def assert_datalinklint_passes(doc):
    """Runs STIL's ``stilts datalinklint`` (the DataLink 1.1 rules: columns,
    error rows, service descriptors and their parameters; it fetches nothing)
    on the links document ``doc`` and fails unless it reports 0 errors and 0
    warnings; skips when stilts is not installed."""
    if shutil.which("stilts") is None:
        pytest.skip("stilts is not installed")
    result = subprocess.run(
        ["stilts", "datalinklint", "report=EW", "votable=-"], input=doc,
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    totals = [line for line in output.splitlines() if line.startswith("Totals")]
    assert totals and "Errors: 0" in totals[0] and "Warnings: 0" in totals[0], output
