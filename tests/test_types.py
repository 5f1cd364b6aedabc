"""The package is typed (issue 14, item 9): py.typed ships, and mypy checks it clean."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_py_typed_ships():
    assert (ROOT / "fastnet" / "py.typed").exists()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.once  # (mypy over the package: about 20 s)
def test_mypy_is_clean_on_the_package(tmp_path):
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "fastnet", "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith("Success: no issues found")


def test_public_signatures_are_annotated():
    import inspect

    import fastnet
    from fastnet import datasets
    from fastnet.core import metrics

    public = [fastnet.MLP.__init__, fastnet.Sequential.fit, fastnet.Sequential.predict, fastnet.Sequential.evaluate,
              fastnet.Sequential.predict_proba, fastnet.Sequential.save, fastnet.Sequential.summary, fastnet.load,
              fastnet.Dense.__init__, fastnet.Dropout.__init__, fastnet.Adam.__init__, fastnet.EarlyStopping.__init__,
              datasets.make_blobs, datasets.load_mnist, metrics.confusion_matrix]
    for f in public:
        sig = inspect.signature(f)
        missing = [n for n, p in sig.parameters.items() if n not in ("self", "model", "kwargs")
                   and p.annotation is inspect.Parameter.empty]
        assert not missing and sig.return_annotation is not inspect.Signature.empty, (f.__qualname__, missing)
