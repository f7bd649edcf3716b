"""Checks the deployment files: the Helm chart, docker-compose.yml and every plain YAML file.

Run by scripts/check-deploy (which installs what it needs); exits non-zero with one line per
problem. What it checks, in order:

1. yamllint (config `.yamllint`) on every YAML file the repository tracks, templates excepted.
2. Every `.Values.x.y` path a chart template reads exists in values.yaml, every key of
   values.yaml is read by some template and has a comment above it, and every key a
   `ci/*.yaml` values file sets exists.
3. With Helm's own engine (helm-python-sdk: Helm's Go SDK, no binary needed): `helm lint
   --strict` and `helm template` with each `ci/*.yaml`; every rendered manifest passes yamllint
   and names apiVersion, kind and metadata.name; the default values alone must fail (the chart
   never invents secrets).
4. Against the real `skycut` binary: each container's and Compose service's command is a real
   subcommand with real flags, and the rendered skycut.toml plus each container's environment
   loads as a configuration (`skycut migrate` on a throwaway SQLite file, which reads the whole
   configuration first and names any setting it does not know).
5. `docker-compose config` on docker-compose.yml when Compose is installed.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "skycut"

VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_]\w*)+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ALIAS_DEF = re.compile(r"\$([A-Za-z_]\w*)\s*:?=\s*\.Values((?:\.[A-Za-z_]\w*)+)")


def yaml_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.yml", "*.yaml"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()
    return [ROOT / f for f in listed if "/templates/" not in f and (ROOT / f).exists()]


def lint_text(text: str, name: str, config: YamlLintConfig) -> list[str]:
    return [
        f"{name}:{p.line}:{p.column}: {p.level}: {p.message}"
        for p in linter.run(text, config)
        if p.level == "error" or p.level == "warning"
    ]


def template_references() -> dict[tuple[str, ...], list[str]]:
    """Every `.Values` path the templates read, directly or through a `$alias`, with where."""
    refs: dict[tuple[str, ...], list[str]] = {}
    for path in sorted((CHART / "templates").iterdir()):
        text = path.read_text()
        aliases: dict[str, tuple[str, ...]] = {}
        for m in ALIAS_DEF.finditer(text):
            aliases[m.group(1)] = tuple(m.group(2).strip(".").split("."))
        alias_spans = {m.span() for m in ALIAS_DEF.finditer(text)}
        for lineno, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{lineno}"
            for m in VALUES_REF.finditer(line):
                refs.setdefault(tuple(m.group(1).strip(".").split(".")), []).append(where)
            for name, target in aliases.items():
                for m in re.finditer(r"\$" + name + r"((?:\.[A-Za-z_]\w*)*)(?!\w)", line):
                    if ALIAS_DEF.match(line, m.start()):
                        continue
                    tail = tuple(filter(None, m.group(1).split(".")))
                    refs.setdefault(target + tail, []).append(where)
        # An alias definition alone reads nothing: `$c := .Values.config` must not count as a
        # use of every key under config. Its uses, resolved above, do.
        for start, end in alias_spans:
            defined = VALUES_REF.search(text, start, end)
            if defined:
                key = tuple(defined.group(1).strip(".").split("."))
                lineno = text.count("\n", 0, start) + 1
                where = f"{path.relative_to(ROOT)}:{lineno}"
                refs[key].remove(where)
                if not refs[key]:
                    del refs[key]
    return refs


def lookup(values: object, path: tuple[str, ...]) -> bool:
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def leaves(values: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        path = prefix + (key,)
        if isinstance(value, dict) and value:
            out.extend(leaves(value, path))
        else:
            out.append(path)
    return out


def unknown_keys(overrides: dict, defaults: dict, prefix: tuple[str, ...] = ()) -> list[str]:
    """Keys set in a values file that values.yaml does not have (free-form maps excepted)."""
    out = []
    for key, value in overrides.items():
        path = prefix + (key,)
        if key not in defaults:
            out.append(".".join(path))
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            out.extend(unknown_keys(value, defaults[key], path))
    return out


def undocumented_keys(text: str, refs: dict[tuple[str, ...], list[str]]) -> list[str]:
    """Keys of values.yaml without a comment line right above them. Keys inside a value that
    the templates pass through whole (resources, security contexts) are Kubernetes's, not ours."""
    out = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^( *)([A-Za-z_]\w*):", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            path = tuple(key for _, key in stack)
            ours = any(r[: len(path)] == path for r in refs)
            if ours and not previous.lstrip().startswith("#"):
                out.append(f"values.yaml:{lineno}: {'.'.join(path)} has no comment above it")
        if line.strip():
            previous = line
    return out


def check_values(values: dict) -> list[str]:
    errors = []
    refs = template_references()
    errors += undocumented_keys((CHART / "values.yaml").read_text(), refs)
    for path, wheres in sorted(refs.items()):
        if not lookup(values, path):
            errors.append(f"{wheres[0]}: .Values.{'.'.join(path)} is not in values.yaml")
    for leaf in leaves(values):
        if not any(leaf[: len(r)] == r for r in refs):
            errors.append(f"values.yaml: {'.'.join(leaf)} is read by no template")
    for ci in sorted((CHART / "ci").glob("*.yaml")):
        for key in unknown_keys(yaml.safe_load(ci.read_text()) or {}, values):
            errors.append(f"{ci.relative_to(ROOT)}: {key} is not in values.yaml")
    return errors


def skycut_help(binary: str, *args: str) -> str:
    return subprocess.run([binary, *args, "--help"], check=True, capture_output=True,
                          text=True).stdout


def check_command(binary: str, argv: list[str], where: str) -> list[str]:
    commands = skycut_help(binary).split("Commands:", 1)[-1].split("Options:", 1)[0]
    subcommands = {line.split()[0] for line in commands.splitlines() if line.strip()}
    if not argv or argv[0] not in subcommands:
        return [f"{where}: {argv[:1]} is not a skycut subcommand ({sorted(subcommands)})"]
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", skycut_help(binary, argv[0])))
    return [f"{where}: skycut {argv[0]} has no flag {arg}"
            for arg in argv[1:] if arg.startswith("--") and arg.split("=")[0] not in flags]


def check_configuration(binary: str, toml: str | None, env: dict[str, str], where: str) -> list[str]:
    """Loads the configuration as the container would, through `skycut migrate` on SQLite."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "migrate", "--database-url", f"sqlite://{tmp}/jobs.sqlite?mode=rwc"]
        if toml is not None:
            Path(tmp, "skycut.toml").write_text(toml)
            args += ["--config", f"{tmp}/skycut.toml"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYCUT_")}
        clean.pop("RUST_LOG", None)
        clean.update(RUST_BACKTRACE="0", NO_COLOR="1")
        run = subprocess.run(args, env={**clean, **env}, capture_output=True, text=True,
                             cwd=tmp, timeout=60)
    stderr = ANSI.sub("", run.stderr).strip()
    if run.returncode != 0:
        return [f"{where}: skycut does not accept this configuration: " + " / ".join(
            line.strip() for line in stderr.splitlines() if line.strip())]
    errors = []
    for line in stderr.splitlines():
        if "names no setting" in line:
            errors.append(f"{where}: {line.strip()}")
    return errors


def containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return pod.get("containers", [])


def check_rendered(binary: str, manifests: dict[str, str], name: str,
                   config: YamlLintConfig) -> list[str]:
    errors = []
    docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        errors += lint_text(text, f"{name} {template}", config)
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not (doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name")):
                errors.append(f"{name} {template}: a document without apiVersion, kind or name")
            docs.append(doc)
    secrets: dict[tuple[str, str], str] = {}
    toml = None
    for doc in docs:
        if doc["kind"] == "Secret":
            for key, value in (doc.get("data") or {}).items():
                secrets[(doc["metadata"]["name"], key)] = base64.b64decode(value).decode()
        if doc["kind"] == "ConfigMap":
            toml = doc["data"]["skycut.toml"]
    for doc in docs:
        for c in containers(doc):
            where = f"{name} {doc['kind']}/{doc['metadata']['name']}"
            errors += check_command(binary, c.get("args", []), where)
            env = {}
            for var in c.get("env", []):
                if "value" in var:
                    env[var["name"]] = var["value"]
                    continue
                ref = var["valueFrom"]["secretKeyRef"]
                if (ref["name"], ref["key"]) in secrets:
                    env[var["name"]] = secrets[(ref["name"], ref["key"])]
            uses_config = "--config" in c.get("args", [])
            errors += check_configuration(binary, toml if uses_config else None, env, where)
    return errors


def check_chart(binary: str, values: dict, config: YamlLintConfig) -> list[str]:
    errors = []
    chart = helm_python.Chart.load(str(CHART))
    try:
        chart.render(None, name="skycut", namespace="skycut", is_install=True)
        errors.append("chart: renders with the default values, which hold no secrets")
    except helm_python.HelmRenderError as e:
        if "is required" not in str(e):
            errors.append(f"chart: default values fail for another reason than a missing secret: {e}")
    for ci in sorted((CHART / "ci").glob("*.yaml")):
        name = str(ci.relative_to(ROOT))
        overrides = yaml.safe_load(ci.read_text()) or {}
        report = helm_python.lint(str(CHART), overrides, strict=True)
        errors += [f"{name}: helm lint: {m['path']}: {m['error']}"
                   for m in report["messages"] if m["severity"] >= 2]
        errors += [f"{name}: helm lint: {e}" for e in report.get("errors", [])]
        try:
            manifests = chart.render(overrides, name="skycut", namespace="skycut", is_install=True)
        except helm_python.HelmError as e:
            errors.append(f"{name}: helm template: {e}")
            continue
        errors += check_rendered(binary, manifests, name, config)
    return errors


def check_compose(binary: str) -> list[str]:
    path = ROOT / "docker-compose.yml"
    compose = yaml.safe_load(path.read_text())
    errors = []
    for service, spec in compose["services"].items():
        if spec.get("image", "").startswith("skycut"):
            where = f"docker-compose.yml service {service}"
            errors += check_command(binary, spec.get("command", []), where)
            env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
                   for k, v in spec.get("environment", {}).items()}
            errors += check_configuration(binary, None, env, where)
    tool = shutil.which("docker-compose")
    if tool:
        run = subprocess.run([tool, "-f", str(path), "config", "-q"], capture_output=True,
                             text=True, cwd=ROOT)
        if run.returncode != 0:
            errors.append(f"docker-compose config: {run.stderr.strip()}")
    else:
        print("check-deploy: docker-compose not installed; schema check of docker-compose.yml skipped")
    return errors


def main() -> int:
    binary = os.path.abspath(os.environ.get("SKYCUT_BIN", ROOT / "target" / "debug" / "skycut"))
    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    # Rendered manifests carry long generated lines (base64 secrets, URLs in annotations) that
    # nobody wraps by hand.
    rendered = YamlLintConfig(f"extends: {ROOT / '.yamllint'}\nrules:\n  line-length: disable\n")
    errors = []
    for path in yaml_files():
        if not config.is_file_ignored(str(path.relative_to(ROOT))):
            errors += lint_text(path.read_text(), str(path.relative_to(ROOT)), config)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    errors += check_values(values)
    errors += check_chart(binary, values, rendered)
    errors += check_compose(binary)
    for e in errors:
        print(e)
    print(f"check-deploy: {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
