"""Data-parallel training across processes: MPI on CPUs, NCCL between GPUs.

Every process (a *rank*) holds the whole model and the whole training set.
Each step of ``fit`` takes one *global* batch of ``batch_size * ranks`` rows in
the order a one-process run would use (the same seed gives every rank the same
permutation), and each rank trains on its consecutive share of those rows.
The gradients of all parameters live in one flat buffer (``Network._grad_flat``;
every layer's ``dW``/``db`` is a view of it), and one all-reduce per step sums
it across the ranks, each rank's share weighted by its row count, before the
optimizer step.  Every rank then applies the same update to the same weights,
so the ranks stay identical, and

    N ranks at ``batch_size=B`` train like one process at ``batch_size=N*B``

(same data order, same dropout masks and augmentations: they are drawn by row
position in the global batch); what differs is the order of the float
additions in the GEMMs, a few units in the last place per step.

Launch with MPI (``mpiexec -n 2 python train.py``, or
``mpiexec -n 2 fastnet train mnist --distributed``) and pass
``distributed=True`` to ``fit``:

* on the ``cpu`` backend the gradients are summed with MPI (mpi4py):
  ``Iallreduce`` in place on the flat buffer, waited on with a timeout
  (:data:`DEFAULT_TIMEOUT`, ``FASTNET_DISTRIBUTED_TIMEOUT``), so a rank that
  dies or stalls ends the others with :class:`DistributedTimeoutError`
  instead of a hang;
* on the ``cuda`` backend with NCCL (``cupyx.distributed``), the device buffer
  reduced on CuPy's current stream with no host copy; MPI only starts the ranks
  and carries the few host messages of the start of ``fit``.  NCCL calls are
  asynchronous and have no timeout here: a dead rank shows as a hang at the
  next synchronisation, which MPI's launcher ends when the dead rank's process
  exits.  Call :func:`init` before creating models: it picks the GPU of each
  rank (``local rank % GPUs``).

At the start of every distributed ``fit``, rank 0's weights, optimizer state
and random state are broadcast, and every rank checks that its data, batch
size and settings are rank 0's (a mismatch is a :class:`DistributedError` on
every rank).  Checkpoints (``ModelCheckpoint``) are written by rank 0 only;
resume with the same number of ranks and batch size.  Progress lines and the
doctor's warnings come from rank 0.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import sys
import time
import zlib
from typing import Any

import numpy as np

#: Seconds a collective may wait for the other ranks before
#: :class:`DistributedTimeoutError` (``FASTNET_DISTRIBUTED_TIMEOUT`` overrides).
#: Generous: a rank's first step may include compiling kernels.
DEFAULT_TIMEOUT = 300.0

_INSTALL = "pip install '.[mpi]' in fastnet's clone (mpi4py and an MPI library, e.g. the mpich wheel)"


class DistributedError(RuntimeError):
    """The ranks of a data-parallel training disagree, or cannot talk."""


class DistributedTimeoutError(DistributedError):
    """A collective did not complete in time: another rank died, stalled or left."""


def _timeout_from_env():
    text = os.environ.get("FASTNET_DISTRIBUTED_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"FASTNET_DISTRIBUTED_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py and an MPI library: {_INSTALL} ({exc})") from exc
    return MPI


class Communicator:
    """The collectives data-parallel training uses.  ``rank``/``size``: this process and
    the number of processes; ``local_rank``/``local_size``: the same on this host."""

    name = "?"
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def allreduce(self, buf, what: str) -> None:
        """Sum ``buf`` (contiguous) across the ranks, in place."""
        raise NotImplementedError

    def broadcast(self, buf) -> None:
        """Overwrite ``buf`` with rank 0's, in place."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable), on every rank."""
        raise NotImplementedError

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (after an error that leaves a collective pending)."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"


class MPICommunicator(Communicator):
    """Collectives of an MPI communicator (mpi4py; default ``COMM_WORLD``), each a
    non-blocking call waited on with a deadline of ``timeout`` seconds."""

    name = "mpi"

    def __init__(self, comm: Any = None, timeout: float | None = None) -> None:
        self.MPI = MPI = _import_mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if timeout is None:
            timeout = _timeout_from_env()
        elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self._aborting = False
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    def _wait(self, request, what):
        """Poll ``request`` until it completes; a deadline instead of MPI's endless wait.
        Polls busily for the first 2 ms (a step's all-reduce: as fast as a blocking call),
        then yields the core between polls (a rank still computing, or one that is gone)."""
        start = time.perf_counter()
        polls = 0
        while not request.Test():
            polls += 1
            if polls & 255:  # the clock every 256 polls
                continue
            waited = time.perf_counter() - start
            if waited > self.timeout:
                # A collective left pending would hang MPI_Finalize at exit: abort the job then
                # instead (the error can still be caught, e.g. to save the model first).
                if not self._aborting:
                    self._aborting = True
                    atexit.register(self._abort_at_exit)
                raise DistributedTimeoutError(
                    f"rank {self.rank} of {self.size}: {what} did not complete within {self.timeout:g} s: "
                    "another rank died, stalled or stopped calling fit. The job cannot go on (an MPI "
                    "collective is left pending): this process aborts the MPI job when it exits. The "
                    "timeout is MPICommunicator(timeout=...) or FASTNET_DISTRIBUTED_TIMEOUT")
            if waited > 2e-3:
                time.sleep(0 if waited < 0.05 else 2e-4)

    def allreduce(self, buf, what="the gradient all-reduce"):
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)

    def broadcast(self, buf, what="a broadcast from rank 0"):
        self._wait(self.comm.Ibcast(buf, root=0), what)

    def broadcast_object(self, obj, what="a broadcast from rank 0"):
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.is_root else None
        length = np.array([0 if data is None else data.size], dtype=np.int64)
        self.broadcast(length, what)
        buf = data.copy() if data is not None else np.empty(int(length[0]), dtype=np.uint8)
        self.broadcast(buf, what)
        return obj if self.is_root else pickle.loads(buf.tobytes())

    def abort(self, code=1):
        self.comm.Abort(code)

    def _abort_at_exit(self):
        # the error is on stderr by now: give the launcher a moment to forward it first
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)
        self.abort(1)


class NCCLCommunicator(Communicator):
    """NCCL between GPUs (``cupyx.distributed``'s NCCL backend): device buffers reduced on
    the stream current at each call (``current_stream()``, CuPy's), so a collective is
    ordered after the kernels that made its buffer; ``host`` (an :class:`MPICommunicator`)
    gives the ranks and carries host objects.  ``nccl``: the object from
    ``cupyx.distributed.init_process_group``."""

    name = "nccl"

    def __init__(self, host: MPICommunicator, nccl: Any, current_stream: Any) -> None:
        self.host = host
        self.rank, self.size = host.rank, host.size
        self.local_rank, self.local_size = host.local_rank, host.local_size
        self.nccl = nccl
        self.current_stream = current_stream

    def allreduce(self, buf, what="the gradient all-reduce"):
        self.nccl.all_reduce(buf, buf, "sum", self.current_stream())  # in place, on the compute stream

    def broadcast(self, buf, what="a broadcast from rank 0"):
        self.nccl.broadcast(buf, 0, self.current_stream())

    def broadcast_object(self, obj, what="a broadcast from rank 0"):
        return self.host.broadcast_object(obj, what)

    def abort(self, code=1):
        self.host.abort(code)


_WORLD: MPICommunicator | None = None


def world() -> MPICommunicator:
    """The MPI communicator of all ranks (``COMM_WORLD``), made once per process."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPICommunicator()
    return _WORLD


def init() -> MPICommunicator:
    """Start MPI and, where CuPy sees GPUs, make GPU ``local_rank % GPUs`` this rank's
    current device: call before creating the models of a distributed run on GPUs."""
    comm = world()
    try:
        cupy = _gpu_array_module()
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver or no GPU: the CPU backend's MPI is all there is
        count = 0
    if count:
        cupy.cuda.Device(comm.local_rank % count).use()
    return comm


def _gpu_array_module() -> Any:
    """CuPy, or under numba's simulator the CuPy contract that the cuda-sim backend runs on."""
    import numba

    if getattr(numba.config, "ENABLE_CUDASIM", False):
        from fastnet.cuda_sim import contract as cupy_contract

        return cupy_contract.module()
    import cupy

    return cupy


def check_rank_device(host: Any, device: int, count: int) -> None:
    """Refuse a rank whose current GPU is not its local rank's (``local_rank % count``,
    the one :func:`init` selects): without ``init()`` every rank of a host would build
    its model on GPU 0, and NCCL cannot run two ranks on one GPU."""
    if count < 1:
        raise DistributedError("a data-parallel fit on the cuda backend needs a visible GPU; CuPy sees none")
    if host.local_size > count:
        raise DistributedError(
            f"{host.local_size} ranks run on this host but CuPy sees {count} GPU(s): NCCL needs one GPU "
            f"per rank (start at most {count} ranks per host, e.g. mpiexec -n {count}, or make more "
            "GPUs visible with CUDA_VISIBLE_DEVICES)")
    expected = host.local_rank % count
    if device != expected:
        raise DistributedError(
            f"rank {host.rank} (local rank {host.local_rank} of {host.local_size} on this host) runs on GPU "
            f"{device}, but its GPU is {expected}: call fastnet.train.distributed.init() before creating the "
            f"model (it selects GPU local_rank % {count}), or cupy.cuda.Device({expected}).use()")


def resolve(distributed: Any, backend: Any) -> Communicator | None:
    """``fit``'s ``distributed=``: None/False (one process), True (MPI's world, over
    the backend's collective: MPI on the CPU, NCCL on CuPy devices) or a
    :class:`Communicator`."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        return backend.collective(world())
    if isinstance(distributed, Communicator):
        return distributed
    raise TypeError(f"distributed must be True, False, None or a fastnet.train.distributed.Communicator, "
                    f"got {distributed!r}")


#: The :class:`DataParallel` step of each model in a data-parallel ``fit`` now, by ``id(model)``:
#: the run's, not the model's (a model holds no per-run state); :func:`stepping` sets and removes
#: an entry, :func:`running` reads it.  The model is alive while its entry is: ``fit`` holds it.
_RUNNING: dict[int, DataParallel] = {}


def running(model) -> DataParallel | None:
    """The data-parallel step of the ``fit`` training ``model`` now (checkpoints record its
    ``layout``), else None: no fit, or a one-process one."""
    return _RUNNING.get(id(model))


@contextlib.contextmanager
def stepping(model, run):
    """``running(model)`` is ``run`` inside the block when ``run`` is data-parallel (it has a
    communicator); the entry is removed on leaving, also on an error."""
    if run.comm is None:
        yield
        return
    _RUNNING[id(model)] = run
    try:
        yield
    finally:
        _RUNNING.pop(id(model), None)


def is_root(model) -> bool:
    """True unless ``model`` is training data-parallel as a rank other than 0."""
    run = running(model)
    return run is None or run.comm.is_root


class Single:
    """One process: the whole global batch is this process's, nothing to reduce."""

    comm: Communicator | None = None
    size = 1

    def rows(self, start, m):
        return start, m

    def reduce_gradients(self, model, m, m_local):
        pass

    def reduce_epoch(self, losses, correct):
        return losses, correct

    #: What a checkpoint records of the ranks (None: one process).
    layout: dict | None = None


class DataParallel(Single):
    """The data-parallel side of one ``fit``: this rank's rows of each global batch, the
    gradient all-reduce and the epoch's sums."""

    comm: Communicator

    def __init__(self, comm: Communicator, batch_size: int | None) -> None:
        self.comm = comm
        self.size = comm.size
        self.layout = {"ranks": self.size, "batch_size_per_rank": batch_size}

    def rows(self, start, m):
        """This rank's ``(first row, rows)`` of the global batch ``[start, start + m)``:
        consecutive shares, as equal as can be (the first ranks one row short)."""
        lo = start + (self.comm.rank * m) // self.size
        hi = start + ((self.comm.rank + 1) * m) // self.size
        return lo, hi - lo

    def reduce_gradients(self, model, m, m_local):
        """Sum the flat gradient across the ranks; each rank's gradient (of its
        ``m_local`` rows' loss, scaled as a batch of ``m_local``) first rescaled to
        its share of the global batch of ``m`` rows."""
        flat = model._grad_flat
        if m_local == 0:
            flat.fill(0)
        else:
            k = model.n_outputs_
            factor = model.loss_.scale(m, k) / model.loss_.scale(m_local, k)
            if factor != 1.0:
                flat *= flat.dtype.type(factor)
        self.comm.allreduce(flat, "the gradient all-reduce")

    def reduce_epoch(self, losses, correct):
        """The epoch's per-step loss sums and correct counts (host arrays) over all ranks."""
        losses = np.ascontiguousarray(losses, dtype=np.float64)
        correct = np.ascontiguousarray(correct, dtype=np.int64)
        host = _host(self.comm)  # host arrays: MPI's, also beside NCCL
        host.allreduce(losses, "the epoch's loss sum")
        host.allreduce(correct, "the epoch's accuracy count")
        return losses, correct

    def start(self, model, X, y, settings):
        """Make every rank start as rank 0 (weights, optimizer state, random state) and
        check that the ranks agree on the data and the settings of this fit."""
        comm = self.comm
        mine = {"rows": len(X), "data": _digest(X, y), **settings}
        root = comm.broadcast_object(mine, "the start of a distributed fit")
        differ = sorted(k for k in set(mine) | set(root) if mine.get(k) != root.get(k))
        flag = np.array([1 if differ else 0], dtype=np.int64)
        _host(comm).allreduce(flag, "the check of the ranks' data and settings")
        if flag[0]:
            detail = (f": this rank has {', '.join(f'{k}={mine.get(k)!r}' for k in differ)} where rank 0 has "
                      f"{', '.join(f'{k}={root.get(k)!r}' for k in differ)}") if differ else ""
            raise DistributedError(
                f"rank {comm.rank} of {comm.size}: the ranks of a distributed fit must train on the same data "
                f"with the same settings, and {int(flag[0])} rank(s) differ from rank 0{detail}")
        for _, p in model.parameters():
            comm.broadcast(p)
        opt = model.optimizer_
        state = comm.broadcast_object(opt.get_state())  # host arrays: once per fit
        opt.set_state(state)
        model.backend_.set_rng_state(comm.broadcast_object(model.backend_.get_rng_state()))


def _host(comm):
    return comm.host if isinstance(comm, NCCLCommunicator) else comm


def describe(obj):
    """``repr(obj)`` for comparing settings across ranks; the class name where the repr is
    the default one (it holds an address, which differs between processes)."""
    text = repr(obj)
    return type(obj).__qualname__ if " at 0x" in text else text


def _digest(X, y):
    """A cheap fingerprint of the training data (CRC32 of its bytes)."""
    crc = zlib.crc32(np.ascontiguousarray(X).view(np.uint8).reshape(-1))
    return zlib.crc32(np.ascontiguousarray(y).view(np.uint8).reshape(-1), crc)
