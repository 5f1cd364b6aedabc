"""Optimizers: one fused kernel call per parameter tensor and step.

State arrays are allocated once in :meth:`Optimizer.setup`; a step allocates
nothing.  Kernels receive flat views (``reshape(-1)`` of C-contiguous arrays),
so every update is one pass over contiguous memory.  SGD, Adam and AdamW on a CPU whose
step GEMMs run on oneDNN's OpenMP pool update every tensor in one call shared by the
pool's threads instead, where that was measured faster (the same results, bit for bit).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from fastnet.core.validation import check_choice, check_real


def check_lr(lr):
    """``lr`` must be a positive finite number."""
    return check_real("lr", lr, low=0, low_open=True)


def _one_rate(lr, learning_rate):
    """``lr`` or ``learning_rate`` (Keras's and PyTorch's name, the same thing), not both."""
    if learning_rate is None:
        return lr
    if lr is not None:
        raise ValueError(f"give lr or learning_rate (the same thing), not both: got lr={lr!r} and "
                         f"learning_rate={learning_rate!r}")
    return check_real("learning_rate", learning_rate, low=0, low_open=True)


#: Every optimizer by name (filled by :class:`Optimizer` subclasses that set ``name``).
OPTIMIZERS: dict[str, type[Optimizer]] = {}


class Optimizer:
    """Base class.  ``lr`` is the base learning rate; a schedule scales it per step.

    Every optimizer takes ``learning_rate=`` (Keras's and PyTorch's name) for ``lr``; giving
    both is an error.  ``optimizer.learning_rate`` reads and sets ``lr``.

    A subclass sets ``name`` (which registers it: ``fit(optimizer=name)``, the CLI),
    ``kernel`` (the name of its update kernel in the kernel table), ``slots`` (its
    per-parameter state arrays, with ``initial`` values when not 0) and ``_scalars`` (the
    kernel's arguments after the arrays: ``kernel(w, g, *slots, *scalars)``).
    Its state leaves and comes back through one pair of methods, :meth:`get_state`
    and :meth:`set_state` (checkpoints, ``model.to``, the NaN guard).
    """

    name: str | None = None
    kernel: str | None = None
    default_lr = 0.01
    #: Names of the per-parameter state arrays (``"m"``, ``"v"`` ...).
    slots: tuple[str, ...] = ()
    #: Adapts its step per parameter (Adam, RMSprop...): the doctor reads a too-high
    #: learning rate differently.
    adaptive = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            OPTIMIZERS[cls.name] = cls

    @classmethod
    def from_config(cls, config):
        """An optimizer from :meth:`get_config` output (``{"name": ..., hyper-parameters}``)."""
        config = dict(config)
        name = config.pop("name", None)
        check_choice("optimizer", name, tuple(OPTIMIZERS))
        return OPTIMIZERS[name](**config)

    def __init__(self, lr: float | None = None, weight_decay: float = 0.0, *,
                 learning_rate: float | None = None) -> None:
        lr = _one_rate(lr, learning_rate)
        self.lr = check_lr(self.default_lr if lr is None else lr)
        self.weight_decay = check_real("weight_decay", weight_decay, low=0)
        self.t = 0
        self.state: list[dict[str, Any]] = []

    @property
    def learning_rate(self) -> float:
        """``lr`` under Keras's and PyTorch's name."""
        return self.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.lr = check_real("learning_rate", value, low=0, low_open=True)

    def hyperparameters(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def get_config(self):
        return {"name": self.name, **self.hyperparameters()}

    def initial_values(self):
        """``{slot: value}`` each state array starts from (0 unless a subclass says)."""
        return {s: 0.0 for s in self.slots}

    def setup(self, params, grads, backend):
        """Allocate state for ``params`` (arrays) whose gradients live in ``grads``."""
        xp = backend.xp
        self._backend = backend
        self._kernel = getattr(backend.kernel_set, self.kernel)
        initial = self.initial_values()
        self.state = [{s: xp.full(p.shape, initial[s], dtype=p.dtype) for s in self.slots} for p in params]
        self.bind(params, grads)

    def get_state(self, device: bool = False, into: dict | None = None) -> dict:
        """The state: ``{"config", "t", "slots": [{slot: array} per parameter]}``.

        Arrays are host (NumPy) copies, or with ``device=True`` copies on the device;
        ``into`` (an earlier device state) has its arrays overwritten instead of new
        ones allocated.
        """
        b = self._backend
        if device:
            if into is None:
                slots = [{k: b.xp.empty_like(a) for k, a in st.items()} for st in self.state]
            else:
                slots = into["slots"]
            for dst, st in zip(slots, self.state):
                for k, a in st.items():
                    b.xp.copyto(dst[k], a)
        else:
            slots = [{k: b.to_host(a).copy() for k, a in st.items()} for st in self.state]
        return {"config": self.get_config(), "t": self.t, "slots": slots}

    def set_state(self, state: dict) -> None:
        """Copy a :meth:`get_state` result (host or device arrays) into this optimizer's
        state arrays (allocated by :meth:`setup` already) and step count."""
        b = self._backend
        if len(state["slots"]) != len(self.state):
            raise ValueError(f"the state holds {len(state['slots'])} parameters, this optimizer "
                             f"{len(self.state)}")
        for mine, theirs in zip(self.state, state["slots"]):
            for k, a in mine.items():
                src = theirs[k]
                if isinstance(src, np.ndarray):
                    src = b.asarray(src, dtype=a.dtype)
                b.xp.copyto(a, src)
        self.t = int(state["t"])

    def bind(self, params, grads):
        """Point at parameter and gradient arrays (fixed buffers), keeping the state.

        A step updates them last layer first: the first layer's weights, which the next
        step's first GEMM reads, are then the last written, still in the caches (Intel Xeon
        with AMX, two fits each in its own process, interleaved epochs: 784-128-10 sigmoid SGD at
        batch 128 3.4% and 5.4% faster per epoch; 784-512-512-10 Adam at batch 128 between -1%
        and +4% in five comparisons, at 1024 even).  The results are the same in any order."""
        flat = lambda a: a.reshape(-1)  # a view: every array here is C-contiguous
        self._flat = [
            (flat(p), flat(g), [flat(st[s]) for s in self.slots])
            for p, g, st in zip(params, grads, self.state)
        ][::-1]
        self._params = list(params)[::-1]  # (in _flat's order)
        self._pool_update = None  # made on the first step on an OpenMP pool (False: none)

    def step_update(self, shapes, kernel_set):
        """This optimizer's update of parameters of ``shapes`` (float32), as something
        ``fastnet.backends.gemm_choice`` times in each step with a GEMM provider
        (:class:`fastnet.backends.gemm_choice.StepUpdate`): a copy of this optimizer set up on
        scratch arrays (this one's state untouched) steps them through :meth:`step`, with the
        provider's pool runner (shared by the pool's threads where measured faster) or without
        (one thread).  ``make(runner)`` returns the step, its scratch optimizer as ``.optimizer``."""
        from fastnet.backends.gemm_choice import StepUpdate

        shapes = tuple(tuple(int(d) for d in s) for s in shapes)

        def make(runner):
            scratch = copy.copy(self)
            scratch.t = 0  # (its state starts afresh)
            params = [np.full(s, 0.01, dtype=np.float32) for s in shapes]
            grads = [np.full(s, 1e-3, dtype=np.float32) for s in shapes]
            scratch.setup(params, grads, _ScratchBackend(kernel_set, runner))

            def step():
                # (the class's step: an instance's own, e.g. the scikit-learn estimators' penalised
                # step, acts on the fit's state, not this copy's)
                type(scratch).step(scratch, scratch.lr)

            step.optimizer = scratch
            return step

        return StepUpdate(self.name or type(self).__name__, shapes, make)

    def step(self, lr):
        """Update every parameter in place from its gradient buffer, at learning rate ``lr``.

        Where the step's GEMMs run on an OpenMP pool of more than one thread (oneDNN's) and
        the kernel has a pool version (``KernelSet.pool_update``: SGD, Adam, AdamW), those
        threads share the update: the same loop, bit for bit the same result.  Which way is
        faster depends on the model's size and the CPU: measured on the first steps at each
        thread count (``gemm_onednn.FasterOf``), then kept."""
        runner = self._backend.pool_runner()
        if runner is not None and runner.threads() > 1:
            if self._pool_update is None:
                # (a subclass with an update of its own keeps it: the pool runs the kernel's loop)
                own = type(self)._update is not Optimizer._update
                # precision="bf16": the weights rounded as they are updated, for the next forward
                rounding = self._backend.step_rounding()
                bits = rounding.step_bits(self._params) if rounding is not None else None
                self._pool_update = not own and self._backend.kernel_set.pool_update(
                    self.kernel, self._flat, runner.thread_functions, bits) or False
                self._rounding = rounding
                self._rounded = [(p, b.reshape(p.shape)) for p, b in zip(self._params, bits or ()) if b is not None]
                self._where = runner.faster_of()
            if self._pool_update:
                self._where(runner.threads(), self._step_here, self._step_on_pool, lr, runner)
                return
        self._step_here(lr)

    def _step_here(self, lr, runner=None):
        self.t += 1
        for w, g, st in self._flat:
            self._update(w, g, st, lr)

    def _step_on_pool(self, lr, runner):
        self.t += 1
        self._pool_update.set(*self._scalars(lr))
        rounds = bool(self._rounded) and self._rounding.rounds_in_steps()  # (inside fit's loop only)
        self._pool_update.rounding(rounds)
        runner.run(self._pool_update.body, self._pool_update.data)
        if rounds:
            self._rounding.rounded_by_step(self._rounded)

    def _scalars(self, lr):
        """The kernel's arguments after its arrays, for this step at learning rate ``lr``."""
        raise NotImplementedError

    def _update(self, w, g, st, lr):
        self._kernel(w, g, *st, *self._scalars(lr))


class _ScratchBackend:
    """What :meth:`Optimizer.setup` and :meth:`Optimizer.step` ask of a backend, for
    :meth:`Optimizer.step_update`'s scratch steps: NumPy arrays, ``kernel_set``'s kernels,
    ``runner`` (an OpenMP pool's, or None), no bf16 rounding."""

    xp = np

    def __init__(self, kernel_set, runner):
        self.kernel_set = kernel_set
        self._runner = runner

    def pool_runner(self):
        return self._runner

    @staticmethod
    def step_rounding():
        return None


class SGD(Optimizer):
    """Plain gradient descent ``w -= lr * (g + weight_decay * w)``."""

    name = "sgd"
    kernel = "sgd_update"
    default_lr = 0.1

    def _scalars(self, lr):
        return lr, self.weight_decay


class Momentum(Optimizer):
    """SGD with heavy-ball momentum."""

    name = "momentum"
    kernel = "momentum_update"
    default_lr = 0.01
    slots = ("v",)

    def __init__(self, lr: float | None = None, momentum: float = 0.9, weight_decay: float = 0.0, *,
                 learning_rate: float | None = None) -> None:
        super().__init__(lr, weight_decay, learning_rate=learning_rate)
        self.momentum = check_real("momentum", momentum, low=0, high=1, high_open=True)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum}

    def _scalars(self, lr):
        return lr, self.momentum, self.weight_decay


class Nesterov(Momentum):
    """SGD with Nesterov momentum."""

    name = "nesterov"
    kernel = "nesterov_update"


class Adam(Optimizer):
    """Adam (Kingma & Ba), L2 weight decay added to the gradient."""

    name = "adam"
    kernel = "adam_update"
    adaptive = True
    default_lr = 1e-3
    slots = ("m", "v")

    def __init__(self, lr: float | None = None, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, *, learning_rate: float | None = None) -> None:
        super().__init__(lr, weight_decay, learning_rate=learning_rate)
        self.beta1 = check_real("beta1", beta1, low=0, high=1, high_open=True)
        self.beta2 = check_real("beta2", beta2, low=0, high=1, high_open=True)
        self.eps = check_real("eps", eps, low=0, low_open=True)

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def step(self, lr):
        # Bias corrections are host scalars: no device round trip per step.
        t = self.t + 1
        self._bc1 = 1.0 - self.beta1**t
        self._bc2 = 1.0 - self.beta2**t
        super().step(lr)

    def _scalars(self, lr):
        return lr, self.beta1, self.beta2, self.eps, self.weight_decay, self._bc1, self._bc2


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    name = "adamw"
    kernel = "adamw_update"

    def __init__(self, lr: float | None = None, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01, *, learning_rate: float | None = None) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay, learning_rate=learning_rate)


class RMSprop(Optimizer):
    """RMSprop (Hinton)."""

    name = "rmsprop"
    kernel = "rmsprop_update"
    adaptive = True
    default_lr = 1e-3
    slots = ("s",)

    def __init__(self, lr: float | None = None, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0, *,
                 learning_rate: float | None = None) -> None:
        super().__init__(lr, weight_decay, learning_rate=learning_rate)
        self.rho = check_real("rho", rho, low=0, high=1, high_open=True)
        self.eps = check_real("eps", eps, low=0, low_open=True)

    def hyperparameters(self):
        return {**super().hyperparameters(), "rho": self.rho, "eps": self.eps}

    def _scalars(self, lr):
        return lr, self.rho, self.eps, self.weight_decay


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer): per-parameter steps shrinking with the sum of
    squared gradients.  Defaults as PyTorch's: ``lr=0.01``, ``eps=1e-10``, accumulators
    starting at ``initial_accumulator_value=0``."""

    name = "adagrad"
    kernel = "adagrad_update"
    default_lr = 0.01
    slots = ("s",)
    adaptive = True

    def __init__(self, lr: float | None = None, eps: float = 1e-10, initial_accumulator_value: float = 0.0,
                 weight_decay: float = 0.0, *, learning_rate: float | None = None) -> None:
        super().__init__(lr, weight_decay, learning_rate=learning_rate)
        self.eps = check_real("eps", eps, low=0, low_open=True)
        self.initial_accumulator_value = check_real("initial_accumulator_value", initial_accumulator_value, low=0)

    def hyperparameters(self):
        return {**super().hyperparameters(), "eps": self.eps,
                "initial_accumulator_value": self.initial_accumulator_value}

    def initial_values(self):
        return {"s": self.initial_accumulator_value}

    def _scalars(self, lr):
        return lr, self.eps, self.weight_decay


def get_optimizer(optimizer: str | Optimizer = "sgd", lr: float | None = None,
                  weight_decay: float | None = None) -> Optimizer:
    """An :class:`Optimizer` from a name (with ``lr``/``weight_decay``) or an instance."""
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            optimizer.lr = check_lr(lr)
        if weight_decay is not None:
            optimizer.weight_decay = check_real("weight_decay", weight_decay, low=0)
        return optimizer
    check_choice("optimizer", optimizer, tuple(OPTIMIZERS))
    kwargs = {}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return OPTIMIZERS[optimizer](lr=lr, **kwargs)
