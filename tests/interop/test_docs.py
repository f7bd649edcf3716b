"""Docs that run: every fenced ``sh``/``bash``, ``python`` and ``toml`` block
of README.md and docs/*.md.

Why this file exists: a code block in the documentation is a test that has
not been written yet. A newcomer pastes them as they are, so this module runs
them as they are, in a fresh temporary directory, with only the host and port
replaced by those of the server it started:

- ``sh``/``bash`` and ``python`` blocks run against the session's
  ``skycut serve --demo`` (conftest.py);
- blocks marked ``<!-- docs-test: distributed -->`` run, in document order and
  in one directory, against the distributed topology they start themselves
  (wobbly, frontend, worker) on the shared PostgreSQL and Redis, under a
  Redis prefix and job-store service name of their own;
- ``toml`` blocks are loaded by the real configuration loader
  (``skycut config check FILE``).

A block that cannot run here carries ``<!-- docs-test: skip (why) -->`` on the
line before its fence; the reason is required, and the counts of blocks run
and marked are printed at the end.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import DEFAULT_BIN, REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LANGUAGES = {"sh", "bash", "python", "toml"}
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(\S+?)\s*(?:\((.*)\))?\s*-->\s*$")
# What the documentation calls the service, the job store service and Redis.
FRONTEND_ADDRESSES = ("127.0.0.1:8080", "localhost:8080")
WOBBLY_ADDRESS = "127.0.0.1:8081"
BLOCK_TIMEOUT_S = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str  # "" (run against serve --demo), "distributed" or "skip"
    reason: str

    @property
    def name(self):
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def extract(path):
    """The fenced blocks of ``path`` in the languages this module runs."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        language = fence.group(1)
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        if language in LANGUAGES:
            blocks.append(Block(
                path=path,
                line=i + 1,
                language=language,
                text="\n".join(lines[i + 1:end]) + "\n",
                marker=marker.group(1) if marker else "",
                reason=(marker.group(2) or "").strip() if marker else "",
            ))
        i = end + 1
    return blocks


BLOCKS = [b for path in DOCS for b in extract(path)]
EMBEDDED = [b for b in BLOCKS if b.marker == "" and b.language != "toml"]
TOML = [b for b in BLOCKS if b.marker == "" and b.language == "toml"]
DISTRIBUTED = [b for b in BLOCKS if b.marker == "distributed"]
SKIPPED = [b for b in BLOCKS if b.marker == "skip"]


def skycut_binary():
    return Path(os.environ.get("SKYCUT_BIN", str(DEFAULT_BIN))).resolve()


def clean_env(**extra):
    """The caller's environment without any SKYCUT_* setting, with the binary on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCUT_")}
    env["PATH"] = f"{skycut_binary().parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def substitute(text, frontend, wobbly=None):
    """The block with only the documented host and port replaced."""
    for address in FRONTEND_ADDRESSES:
        text = text.replace(address, frontend)
    if wobbly:
        text = text.replace(WOBBLY_ADDRESS, wobbly)
    return text


def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def run_block(block, text, cwd, env):
    """Runs one block to its end; returns (exit code, output). Output goes to a file, not a
    pipe: a block may leave processes running that keep a pipe open."""
    suffix = ".py" if block.language == "python" else ".sh"
    script = cwd / f"block-{block.line}{suffix}"
    script.write_text(text)
    if block.language == "python":
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-e", "-o", "pipefail", str(script)]
    log = cwd / f"block-{block.line}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = "timeout"
    return code, proc.pid, log.read_text(errors="replace")


def stop_group(pgid):
    """SIGTERM to what a block left running, then SIGKILL after 20 s."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_every_block_is_run_or_marked_with_a_reason():
    assert BLOCKS, "no documentation blocks found"
    for block in BLOCKS:
        assert block.marker in ("", "skip", "distributed"), (
            f"{block.name}: unknown docs-test marker {block.marker!r}")
        if block.marker == "skip":
            assert block.reason, f"{block.name}: a skip marker must say why"


def test_every_curl_example_fails_on_an_error_status():
    """A curl without --fail-with-body saves an error text as the cutout and exits 0."""
    for block in BLOCKS:
        if block.language not in ("sh", "bash"):
            continue
        # Continuation lines belong to the command they continue.
        commands = block.text.replace("\\\n", " ")
        for command in re.findall(r"(?:^|[|;&(`$]\s*|\s)curl\s[^\n]*", commands):
            assert "--fail-with-body" in command, f"{block.name}: {command.strip()}"


@pytest.mark.parametrize("block", EMBEDDED, ids=lambda b: b.name)
def test_block_runs_against_serve_demo(block, skycut, tmp_path):
    frontend = skycut.base_url.split("//", 1)[1].split("/", 1)[0]
    code, _, output = run_block(
        block, substitute(block.text, frontend), tmp_path, clean_env())
    assert code == 0, f"{block.name} failed ({code}):\n{block.text}\n--- output:\n{output}"


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.name)
def test_toml_block_is_a_valid_configuration(block, tmp_path):
    config = tmp_path / "skycut.toml"
    config.write_text(block.text)
    out = subprocess.run(
        [str(skycut_binary()), "config", "check", str(config)],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"{block.name}:\n{block.text}\n{out.stderr}"


def test_the_demo_curl_line_is_paste_ready(skycut, tmp_path):
    line = next(l for l in skycut.stdout_lines if "curl" in l)
    assert line.startswith("curl --fail-with-body "), line
    out = subprocess.run(["bash", "-e", "-c", line], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cutout.fits").read_bytes().startswith(b"SIMPLE  =")


def test_distributed_blocks_run_against_the_distributed_topology(tmp_path):
    assert DISTRIBUTED, "README.md's distributed blocks are gone"
    frontend, wobbly = free_address(), free_address()
    scope = f"docs{uuid.uuid4().hex[:16]}"
    env = clean_env(SKYCUT_REDIS_PREFIX=scope, SKYCUT_SERVICE_NAME=scope)
    groups = []
    try:
        for block in DISTRIBUTED:
            code, pgid, output = run_block(
                block, substitute(block.text, frontend, wobbly), tmp_path, env)
            groups.append(pgid)
            assert code == 0, (
                f"{block.name} failed ({code}):\n{block.text}\n--- output:\n{output}")
        # What the blocks promise: an async job's cutout, downloaded.
        assert (tmp_path / "cutout.fits").read_bytes().startswith(b"SIMPLE  =")
        # And a request without the ingress header is refused, as the README says.
        r = requests.get(f"http://{frontend}/api/cutout/jobs", timeout=30)
        assert r.status_code == 401, r.text
    finally:
        for pgid in reversed(groups):
            stop_group(pgid)
        redis_cli = shutil.which("redis-cli")
        if redis_cli:
            keys = subprocess.run([redis_cli, "--scan", "--pattern", f"{scope}:*"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
            if keys:
                subprocess.run([redis_cli, "DEL", *keys], capture_output=True, timeout=30)


def test_counts_of_blocks_run_and_marked(capsys):
    kinds = Counter(b.language for b in EMBEDDED)
    reasons = Counter(f"{b.name} ({b.reason})" for b in SKIPPED)
    with capsys.disabled():
        print(
            f"\ndocs blocks: {len(BLOCKS)} in all; run: {len(EMBEDDED)} against serve --demo "
            f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
            f"{len(DISTRIBUTED)} against the distributed topology, "
            f"{len(TOML)} toml through `skycut config check`; marked skip: {len(SKIPPED)}"
        )
        for reason in sorted(reasons):
            print(f"  skip {reason}")
    assert len(BLOCKS) == len(EMBEDDED) + len(TOML) + len(DISTRIBUTED) + len(SKIPPED)
