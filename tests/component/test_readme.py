"""Every README example that calls the local stack runs, as written, against a real one.

Fenced ``bash`` blocks that run ``curl`` or ``yolo-kserve`` and ``python`` blocks that use
``DetectionClient`` are executed in a scratch folder (``tests/`` linked in, so the README's relative
paths work) with ``127.0.0.1:8080``/``:8081`` (transformer) and ``:8085``/``:8086`` (predictor, as
``make serve`` puts them) rewritten to the session stack's ports and ``$YOLO_KSERVE_URL`` pointing
at it. A block that needs a cluster is skipped only when the line
before it says ``<!-- readme-test: skip (reason) -->``. ``curl`` runs with ``--fail-with-body``, so
an HTTP error fails the block, as does any command's non-zero exit (``set -euo pipefail``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.component, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\b(.*?)-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass
class Block:
    line: int
    lang: str
    code: str
    skip: str | None


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP_MARKER.search(prev)
        blocks.append(Block(start + 1, lang, "\n".join(body) + "\n",
                            marker.group(1).strip() if marker else None))
        i += 1
    return blocks


def calls_the_stack(block: Block) -> bool:
    if block.lang == "python":
        return "DetectionClient(" in block.code
    if block.lang != "bash":
        return False
    commands = [ln.strip() for ln in block.code.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return any(re.match(r"(curl|yolo-kserve|\.venv/bin/yolo-kserve)\b", c) for c in commands)


BLOCKS = [b for b in readme_blocks() if calls_the_stack(b)]


def test_the_readme_has_runnable_examples():
    runnable = [b for b in BLOCKS if b.skip is None]
    assert sum(b.lang == "bash" for b in runnable) >= 2 and any(b.lang == "python" for b in runnable)
    for b in BLOCKS:  # a block that needs a cluster must say so
        if re.search(r"\bkubectl\b|INGRESS_HOST|SERVICE_HOSTNAME|--wait\b", b.code):
            assert b.skip, f"README.md:{b.line} needs a cluster: mark it <!-- readme-test: skip (...) -->"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    (folder / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    return folder


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_example_runs(block, live_stack, scratch):
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip or 'marked skip'}")
    http_port, grpc_port = live_stack.transformer.http_port, live_stack.transformer.grpc_port
    code = (block.code.replace("127.0.0.1:8080", f"127.0.0.1:{http_port}")
            .replace("127.0.0.1:8081", f"127.0.0.1:{grpc_port}")
            .replace("127.0.0.1:8085", f"127.0.0.1:{live_stack.predictor.http_port}")
            .replace("127.0.0.1:8086", f"127.0.0.1:{live_stack.predictor.grpc_port}"))
    bindir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "SERVICE_HOSTNAME",
                                                           "INGRESS_HOST", "INGRESS_PORT")}
    env.update(PATH=bindir + os.pathsep + env.get("PATH", ""), HOME=str(scratch),
               YOLO_KSERVE_URL=live_stack.transformer_url)
    if block.lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        cmd = ["bash", "-c", prelude + code]
    proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (f"README.md:{block.line} exited {proc.returncode}\n--- code\n{code}"
                                  f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    assert '"error"' not in proc.stdout, proc.stdout[-3000:]
