"""Every Python code block in README.md runs, so the README never fails on copy-paste.

The blocks run top to bottom in one fresh interpreter and one namespace, as a reader
pasting them in order would (a later block may use names an earlier one defined), with
the working directory in a temporary folder. One test per block reports its outcome.

A marker on the line just before a block's opening fence changes how it is run:

``<!-- readme-test: skip REASON -->``
    the block is not run (say why: e.g. it downloads, or needs hardware);
``<!-- readme-test: requires MODULE [MODULE ...] -->``
    the block runs only when the modules import (optional extras), else it is skipped.

A block that fails makes its test fail with the block's line, first line and traceback;
the blocks after it then fail as "not run".
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|requires)\b\s*(.*?)\s*-->")

# Runs the blocks in order in one namespace; prints one JSON line per block.
DRIVER = r"""
import importlib.util, json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
failed = None
for block in blocks:
    line, code, skip, requires = block["line"], block["code"], block["skip"], block["requires"]
    if skip is not None:
        result = {"status": "skipped", "why": f"marked skip: {skip}"}
    elif missing := [m for m in requires if importlib.util.find_spec(m) is None]:
        result = {"status": "skipped", "why": f"needs {', '.join(missing)} (not installed)"}
    elif failed is not None:
        result = {"status": "not run", "why": f"the block at line {failed} failed first"}
    else:
        try:
            exec(compile(code, f"README.md block at line {line}", "exec"), namespace)
            result = {"status": "ok"}
        except BaseException:
            failed = line
            result = {"status": "failed", "why": traceback.format_exc()}
    print(json.dumps({"line": line, **result}), flush=True)
"""


def readme_blocks(text):
    """[(line of the opening fence, code, skip reason or None, required modules)] of the
    ```python blocks of ``text``."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            marker = MARKER.search(lines[start - 1]) if start else None
            skip = marker.group(2) or "no reason given" if marker and marker.group(1) == "skip" else None
            requires = marker.group(2).split() if marker and marker.group(1) == "requires" else []
            blocks.append((start + 1, "\n".join(lines[start + 1 : j]) + "\n", skip, requires))
            i = j
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _block_id(block):
    first = next((ln for ln in block[1].splitlines() if ln.strip()), "")
    return f"line{block[0]}: {first[:40]}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("readme")
    # no block may reach the internet: a download would fail at once on this closed port
    env = dict(os.environ, MPLBACKEND="Agg", FASTNN_MIRROR="http://127.0.0.1:9/{name}/")
    payload = json.dumps([{"line": ln, "code": code, "skip": skip, "requires": req}
                          for ln, code, skip, req in BLOCKS])
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=payload, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            found[record["line"]] = record
    return found, proc


def test_readme_has_python_blocks_and_markers_parse():
    assert len(BLOCKS) >= 3
    text = "<!-- readme-test: skip downloads 18 MB -->\n```python\nx = 1\n```\n" \
           "<!-- readme-test: requires sklearn onnx -->\n```python\ny = 2\n```\n```python\nz = 3\n```\n"
    assert readme_blocks(text) == [(2, "x = 1\n", "downloads 18 MB", []), (6, "y = 2\n", None, ["sklearn", "onnx"]),
                                   (9, "z = 3\n", None, [])]


@pytest.mark.parametrize("block", BLOCKS, ids=_block_id)
def test_readme_block_runs(block, results):
    found, proc = results
    line = block[0]
    name = f"README.md block at line {line} ({_block_id(block).split(': ', 1)[1]!r})"
    record = found.get(line)
    assert record is not None, f"{name} did not report (driver exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    if record["status"] == "skipped":
        pytest.skip(f"{name}: {record['why']}")
    assert record["status"] == "ok", f"{name} {record['status']}: {record['why']}"
