"""The documentation: the site builds with warnings as errors, every Python example in
README.md and docs/pages runs, and the figures it prints are the ones the page shows.

How an example is checked (also told to readers in docs/pages/index.md, "About the examples"):

* Every ```python block runs, in order, the blocks of one page in one namespace (as a
  reader would paste them into one session), in a temporary folder.  A block is left out
  only with ``<!-- no-run: reason -->`` on the line right above it.
* A ```text block that follows a Python block (blank lines between at most) is what that
  block prints: words must be equal, numbers equal within the tolerance.  A line ``...``
  stands for any number of lines.
* A statement whose last line ends in ``# prints <figures>`` must print those figures
  (``# prints < 1e-6``: a number below it).
* Tolerance: a number matches when it is within 2% of the one shown (plus half a unit of
  its last digit shown), unless ``<!-- tolerance: 5% -->`` (or an absolute ``0.01``) stands
  right above the Python block; the figures come from seeded runs, and another CPU or BLAS
  may round a step differently.

Marked ``once``: in CI it runs in the outer run, whose environment has the ``docs`` extra
(``.ci/run``), not again in the README test's nested run of the suite.
"""
import ast
import contextlib
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "pages"
SOURCES = [ROOT / "README.md", *sorted(PAGES.rglob("*.md"))]
README_LIMIT = 12_000  # bytes (issue 28: README <= 12 KB)
DEFAULT_REL = 0.02

pytestmark = pytest.mark.once

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


class Block:
    def __init__(self, path, line, code, skip, tolerance, expected):
        self.path, self.line, self.code = path, line, code
        self.skip, self.tolerance, self.expected = skip, tolerance, expected

    @property
    def id(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _comment_above(text, start):
    """The HTML comments on the lines right above position ``start`` (nearest first)."""
    lines = text[:start].rstrip("\n").split("\n")
    found = []
    while lines and re.fullmatch(r"\s*<!--.*-->\s*", lines[-1]):
        found.append(lines.pop().strip()[4:-3].strip())
    return found


def _tolerance(spec):
    spec = spec.strip()
    if spec.endswith("%"):
        return float(spec[:-1]) / 100, 0.0
    return 0.0, float(spec)


def blocks_of(path):
    text = path.read_text()
    fences = list(FENCE.finditer(text))
    found = []
    for i, m in enumerate(fences):
        if m.group(1) != "python":
            continue
        skip, tolerance = None, (DEFAULT_REL, 0.0)
        for comment in _comment_above(text, m.start()):
            if comment.startswith("no-run:"):
                skip = comment[len("no-run:"):].strip()
                assert skip, f"{path}: a no-run comment must say why"
            elif comment.startswith("tolerance:"):
                tolerance = _tolerance(comment[len("tolerance:"):])
        expected = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            if nxt.group(1) == "text" and not text[m.end():nxt.start()].strip():
                expected = nxt.group(2)
        found.append(Block(path, text.count("\n", 0, m.start()) + 1, m.group(2), skip, tolerance, expected))
    return found


ALL_BLOCKS = [b for path in SOURCES for b in blocks_of(path)]


def _numbers(text):
    return [m.group(0) for m in NUMBER.finditer(text)]


def _value(token):
    return float(token.replace(",", ""))


def _close(actual, shown, tolerance):
    rel, absolute = tolerance
    expected = _value(shown)
    digits = shown.replace(",", "").lower().split("e")[0]
    exponent = int(shown.lower().split("e")[1]) if "e" in shown.lower() else 0
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    half_unit = 0.5 * 10.0 ** (exponent - decimals)
    value = _value(actual)
    return math.isfinite(value) and abs(value - expected) <= max(rel * abs(expected), absolute) + half_unit


def _words(text):
    return NUMBER.sub("#", text).split()


def match_lines(actual, shown, tolerance):
    """None if ``actual`` (printed) matches ``shown`` (the page's figures), else why not."""
    if _words(actual) != _words(shown):
        return f"the words differ:\n--- printed\n{actual}\n--- shown\n{shown}"
    got, want = _numbers(actual), _numbers(shown)
    for a, s in zip(got, want):
        if not _close(a, s, tolerance):
            return f"printed {a} where the page shows {s} (tolerance {tolerance}):\n--- printed\n{actual}\n--- shown\n{shown}"
    return None


def match_output(actual, shown, tolerance):
    """Like :func:`match_lines`, with ``...`` lines in ``shown`` standing for any lines."""
    parts = re.split(r"^\.\.\.[ \t]*$\n?", shown, flags=re.M)
    if len(parts) == 1:
        return match_lines(actual.strip(), shown.strip(), tolerance)
    lines = actual.strip().split("\n")
    pos = 0
    for k, part in enumerate(parts):
        want = part.strip().split("\n") if part.strip() else []
        if not want:
            continue
        first = k == 0
        last = k == len(parts) - 1
        starts = [pos] if first else range(pos, len(lines) - len(want) + 1)
        for s in starts:
            if last and s + len(want) != len(lines):
                continue
            if match_lines("\n".join(lines[s:s + len(want)]), "\n".join(want), tolerance) is None:
                pos = s + len(want)
                break
        else:
            return f"no lines match\n{part.strip()}\n--- printed\n{actual}"
    return None


def check_prints(text, printed, tolerance):
    text = text.strip()
    if text[:1] in "<>":
        value = float(printed.strip().split()[-1])
        bound = float(re.split(r"[:;]\s", text[1:])[0].split()[0])
        ok = value < bound if text[0] == "<" else value > bound
        return None if ok else f"printed {value}, expected {text}"
    want = re.split(r"[:;]\s", text)[0]  # "# prints 0.97: the accuracy": the figures before the colon
    got, shown = _numbers(printed), _numbers(want)
    if not shown:  # "# prints True": the words themselves
        return None if _words(printed) == _words(want) else f"printed {printed.strip()!r}, the comment shows {want!r}"
    if len(got) < len(shown):
        return f"printed {printed!r}, the comment shows {want!r}"
    for a, s in zip(got, shown):
        if not _close(a, s, tolerance):
            return f"printed {a} where the comment shows {s} (tolerance {tolerance}): {printed.strip()!r}"
    return None


class Session:
    """One page's examples, run in order in one namespace."""

    def __init__(self, folder):
        self.namespace = {"__name__": "__docs_example__"}
        self.done = set()
        self.folder = folder

    def run(self, block):
        tree = ast.parse(block.code, filename=block.id)
        source_lines = block.code.split("\n")
        out_all = io.StringIO()
        problems = []
        old = os.getcwd()
        os.chdir(self.folder)
        try:
            for stmt in tree.body:
                buffer = io.StringIO()
                code = compile(ast.Module(body=[stmt], type_ignores=[]), block.id, "exec")
                with contextlib.redirect_stdout(buffer):
                    exec(code, self.namespace)
                out_all.write(buffer.getvalue())
                comment = re.search(r"#\s*prints\s+(.*)$", source_lines[stmt.end_lineno - 1])
                if comment:
                    why = check_prints(comment.group(1), buffer.getvalue(), block.tolerance)
                    if why:
                        problems.append(f"line {stmt.end_lineno}: {why}")
        finally:
            os.chdir(old)
        self.done.add(block.line)
        if block.expected is not None:
            why = match_output(out_all.getvalue(), block.expected, block.tolerance)
            if why:
                problems.append(why)
        return problems


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    made = {}

    def session(path):
        if path not in made:
            made[path] = Session(tmp_path_factory.mktemp(path.stem.replace(".", "_")))
        return made[path]
    return session


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_example_runs_and_prints_what_the_page_shows(block, sessions):
    if block.skip:
        pytest.skip(f"no-run: {block.skip}")
    session = sessions(block.path)
    for earlier in blocks_of(block.path):  # a block run alone (-k) first runs the page's blocks above it
        if earlier.line < block.line and earlier.line not in session.done and not earlier.skip:
            session.run(earlier)
    problems = session.run(block)
    assert not problems, f"{block.id}:\n" + "\n".join(problems)


def test_no_run_examples_are_few_and_say_why():
    skipped = [b for b in ALL_BLOCKS if b.skip]
    assert len(skipped) <= len(ALL_BLOCKS) // 2, [b.id for b in skipped]
    assert all(len(b.skip) > 20 for b in skipped), [(b.id, b.skip) for b in skipped]


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size:,} bytes; the limit is {README_LIMIT:,}: move detail to docs/pages"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    broken = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert links and not broken, f"README.md links to files that do not exist: {broken}"


def test_every_fastnet_variable_is_in_the_table():
    """Every FASTNET_* variable the library, the kernels, the benchmarks, the tests or CI
    read is a row of the table in docs/pages/cli.md, and every row is still read somewhere."""
    name = re.compile(r"\bFASTNET_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
    used = set()
    for folder in ("fastnet", "kernels", "bench", "tests", "examples", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", "") and "__pycache__" not in path.parts \
                    and path != Path(__file__).resolve():
                try:
                    used |= set(name.findall(path.read_text()))
                except UnicodeDecodeError:
                    continue
    table = set(re.findall(r"^\|\s*`(FASTNET_[A-Z0-9_]+)`", (PAGES / "cli.md").read_text(), flags=re.M))
    assert used - table == set(), f"not in docs/pages/cli.md's table: {sorted(used - table)}"
    assert table - used == set(), f"in the table but read nowhere: {sorted(table - used)}"


def test_site_builds_with_warnings_as_errors(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the docs extra is missing in CI ({exc}): pip install -e '.[docs]'")
        pytest.skip(f"the docs extra is not installed ({exc}): pip install -e '.[docs]'")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert (tmp_path / "site" / "index.html").exists()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "fastnet.MLP" in api and "fastnet.integrations.sklearn" in api  # the reference is generated from the docstrings
