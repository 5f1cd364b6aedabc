"""fastnet: small, fast multilayer perceptrons.

Forward and backward passes are written once against a backend's array module
(NumPy on CPU, CuPy on CUDA GPUs); the hot loop runs through fused Numba
kernels.  Start with :class:`MLP`::

    import fastnet
    model = fastnet.MLP([784, 256, 10], backend="cpu", seed=0)
    model.fit(X_train, y_train, epochs=5, optimizer="adam")
    model.evaluate(X_test, y_test)
"""
from .augment import Augment
from .backend import Backend, BackendUnavailableError, available_backends, get_backend
from .callbacks import Callback, EarlyStopping, History, ReduceLROnPlateau
from .checkpoint import CheckpointError, ModelCheckpoint
from .diagnostics import Diagnosis, FastnetWarning, NormRecorder, diagnose
from .gradcheck import gradcheck
from .io import ModelFileError, load_model as load
from .layers import Dense, Dropout
from .sequential import MLP, Sequential
from .optimizers import SGD, Adagrad, Adam, AdamW, Momentum, Nesterov, Optimizer, RMSprop
from .schedules import Constant, Cosine, Exponential, OneCycle, StepDecay
from .training import TrainingDivergedError
from .validation import NotFittedError

__version__ = "0.1.0"

__all__ = [
    "MLP", "Sequential", "Dense", "Dropout", "Augment",
    "Backend", "BackendUnavailableError", "available_backends", "get_backend",
    "Callback", "EarlyStopping", "History", "ReduceLROnPlateau",
    "Optimizer", "SGD", "Momentum", "Nesterov", "Adam", "AdamW", "RMSprop", "Adagrad",
    "Constant", "StepDecay", "Exponential", "Cosine", "OneCycle",
    "gradcheck", "load", "ModelFileError", "NotFittedError", "TrainingDivergedError",
    "ModelCheckpoint", "CheckpointError",
    "diagnose", "Diagnosis", "NormRecorder", "FastnetWarning",
]
