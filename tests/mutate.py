"""Mutation audit in one command: apply each listed bug to a scratch copy, run its tests.

    python tests/mutate.py                    # every mutation in tests/mutations.json
    python tests/mutate.py --only adam-eps    # some, by name (repeatable)
    python tests/mutate.py --list other.json --json results.json

Each mutation is a small, plausible bug: a file, a text that must occur exactly once in
it, its replacement, and the tests that should catch it (pytest node ids or files).  The
working tree (tracked and untracked files, not ``.git``) is copied once to a temporary
folder; each mutation is applied there, its tests run with that copy first on
``PYTHONPATH`` (``fastnet/__init__`` loads the copy's ``kernels/``), and the file is put
back.  A mutation is *killed* when its tests fail, *survived* when they pass, *stale*
when its text no longer occurs exactly once (the code moved: update the list).  Tests
under ``tests/cuda_sim`` run with ``NUMBA_ENABLE_CUDASIM=1``.

The first run of the unmutated copy must pass (else the list's tests are broken, and
every "killed" would mean nothing): it is run once, with all the listed tests.
Exit status: 0 when every mutation was killed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and untracked, not ignored) into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[int, str, float]:
    """pytest on ``tests`` in ``copy``: (exit status, last lines, seconds); cuda_sim apart."""
    groups = [[t for t in tests if t.startswith("tests/cuda_sim")],
              [t for t in tests if not t.startswith("tests/cuda_sim")]]
    rc, tail, t0 = 0, "", time.perf_counter()
    for sim, group in zip((True, False), groups):
        if not group:
            continue
        # FASTNET_THREADS=fixed: the suite's own setting (tests/conftest.py), for the same bit-for-bit
        # comparisons as in a normal run
        env = dict(os.environ, PYTHONPATH=str(copy), FASTNET_THREADS="fixed")
        env.pop("NUMBA_ENABLE_CUDASIM", None)
        if sim:
            env["NUMBA_ENABLE_CUDASIM"] = "1"
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                   *group], cwd=copy, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, "timed out", time.perf_counter() - t0
        tail += "\n".join(proc.stdout.strip().splitlines()[-3:])
        if proc.returncode:
            rc = proc.returncode
            break
    return rc, tail, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", default=str(ROOT / "tests" / "mutations.json"), help="the mutations (JSON)")
    parser.add_argument("--only", action="append", default=[], help="run only this mutation (repeatable)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation's tests")
    args = parser.parse_args(argv)
    mutations = json.loads(Path(args.list).read_text())
    if args.only:
        unknown = set(args.only) - {m["name"] for m in mutations}
        if unknown:
            parser.error(f"--only: no mutation named {sorted(unknown)}")
        mutations = [m for m in mutations if m["name"] in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="fastnet-mutate-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        all_tests = sorted({t for m in mutations for t in m["tests"]})
        rc, tail, secs = run_tests(copy, all_tests, args.timeout * 2)
        if rc:
            print(f"the unmutated copy fails its tests (exit {rc}): fix them first\n{tail}", file=sys.stderr)
            return 2
        print(f"unmutated copy: the listed tests pass ({secs:.0f} s)", flush=True)
        for m in mutations:
            path = copy / m["file"]
            original = path.read_text()
            count = original.count(m["find"])
            if count != 1:
                status, tail, secs = "stale", f"the text occurs {count} times in {m['file']}", 0.0
            else:
                path.write_text(original.replace(m["find"], m["replace"]))
                try:
                    rc, tail, secs = run_tests(copy, m["tests"], args.timeout)
                finally:
                    path.write_text(original)
                status = "survived" if rc == 0 else "killed"
            results.append(dict(name=m["name"], file=m["file"], status=status, seconds=round(secs, 1),
                                tests=m["tests"], why=m.get("why", ""), tail=tail[-400:]))
            print(f"{status:8s} {m['name']:32s} {secs:6.0f} s  {m['file']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    survivors = [r for r in results if r["status"] != "killed"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} killed"
          + (f"; not killed: {', '.join(r['name'] + ' (' + r['status'] + ')' for r in survivors)}"
             if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
