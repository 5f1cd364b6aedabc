"""docs/migrating.md: every ```python block runs (issue 31, item 3).

The blocks run one after another in one fresh interpreter (one import of fastnet), each in
a namespace of its own and a temporary working folder; a failing block is named by its
first line number in the page."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "migrating.md"

RUNNER = r"""
import json, os, sys, tempfile, traceback, warnings
blocks = json.loads(sys.stdin.read())
failed = []
for line, code in blocks:
    os.chdir(tempfile.mkdtemp())
    try:
        exec(compile(code, f"docs/migrating.md:{line}", "exec"), {"__name__": "__main__"})
    except BaseException:
        failed.append(f"block at line {line}:\n{traceback.format_exc()}")
print("FAILED-BLOCKS", json.dumps(failed))
"""


def python_blocks(text):
    """``[(line, code)]`` of the page's ```python blocks (line: the first code line's, 1-based)."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M):
        blocks.append((text[:m.start()].count("\n") + 2, m.group(1)))
    return blocks


def test_the_page_has_a_block_per_anchor():
    text = PAGE.read_text()
    for heading in ("## From the NumPy tutorials", "## From Keras", "## From PyTorch", "## From scikit-learn"):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "```python" in section and "|" in section, heading  # a table and code


def test_every_python_block_runs(tmp_path):
    pytest.importorskip("sklearn")
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 4
    out = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks), capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.rsplit("FAILED-BLOCKS", 1)[1])
    assert failed == [], "\n".join(failed)
