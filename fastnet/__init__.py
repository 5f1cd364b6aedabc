"""fastnet: small, fast multilayer perceptrons.

Forward and backward passes are written once against a backend's array module
(NumPy on CPU, CuPy on CUDA GPUs); the hot loop runs through fused Numba
kernels.  Start with :class:`MLP`::

    import fastnet
    model = fastnet.MLP([784, 256, 10], backend="cpu", seed=0)
    model.fit(X_train, y_train, epochs=5, optimizer="adam")
    model.evaluate(X_test, y_test)
"""

def _source_kernels() -> None:
    """Import ``kernels/`` as ``fastnet.kernels`` when this is the source tree.

    An install maps the repository's top-level ``kernels/`` to ``fastnet/kernels``.
    Run from a clone's root (a script, ``python -m fastnet``, a REPL, Ray or Dask
    workers started there), this folder shadows the installed package and has no
    ``kernels`` inside: load the sibling folder under the same name, so the source
    tree and the install run the same kernels.
    """
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(os.path.dirname(here), "kernels")
    init = os.path.join(source, "__init__.py")
    if "fastnet.kernels" in sys.modules or os.path.isdir(os.path.join(here, "kernels")) or not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location("fastnet.kernels", init, submodule_search_locations=[source])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastnet.kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["fastnet.kernels"]
        raise
    # What the import system does for a submodule it loads: bind it on the parent,
    # so ``fastnet.kernels`` works after ``import fastnet`` as it does installed.
    setattr(sys.modules[__name__], "kernels", module)


_source_kernels()

from fastnet.train.augment import Augment  # noqa: E402  (after the kernels are importable)
from fastnet.backends.devices import Backend, BackendUnavailableError, available_backends, get_backend  # noqa: E402
from fastnet.core.callbacks import Callback, EarlyStopping, History, ReduceLROnPlateau  # noqa: E402
from fastnet.train.checkpoint import CheckpointError, ModelCheckpoint  # noqa: E402
from fastnet.doctor import Diagnosis, FastnetWarning, NormRecorder, diagnose  # noqa: E402
from fastnet.doctor.gradcheck import gradcheck  # noqa: E402
from fastnet.core.io import ModelFileError, load_model as load  # noqa: E402
from fastnet.core.layers import Dense, Dropout  # noqa: E402
from fastnet.core.sequential import MLP, Sequential  # noqa: E402
from fastnet.core.optimizers import SGD, Adagrad, Adam, AdamW, Momentum, Nesterov, Optimizer, RMSprop  # noqa: E402
from fastnet.core.schedules import Constant, Cosine, Exponential, OneCycle, StepDecay  # noqa: E402
from fastnet.train.interrupt import TrainingInterrupted  # noqa: E402
from fastnet.train.fit import TrainingDivergedError  # noqa: E402
from fastnet.core.validation import NotFittedError  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MLP", "Sequential", "Dense", "Dropout", "Augment",
    "Backend", "BackendUnavailableError", "available_backends", "get_backend",
    "Callback", "EarlyStopping", "History", "ReduceLROnPlateau",
    "Optimizer", "SGD", "Momentum", "Nesterov", "Adam", "AdamW", "RMSprop", "Adagrad",
    "Constant", "StepDecay", "Exponential", "Cosine", "OneCycle",
    "gradcheck", "load", "ModelFileError", "NotFittedError", "TrainingDivergedError",
    "TrainingInterrupted", "ModelCheckpoint", "CheckpointError",
    "diagnose", "Diagnosis", "NormRecorder", "FastnetWarning",
]
