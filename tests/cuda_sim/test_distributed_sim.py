"""Data-parallel training on the CUDA backend's code under the simulator (fastnet.train.distributed).

On a GPU the gradients are summed by NCCL (``cupyx.distributed``); here no NCCL runs, and
the cuda-sim array module brings a stand-in (``cupy_contract._NCCLStandIn``) whose calls
are bound against the installed CuPy's ``NCCLBackend`` and computed with MPI.  What this
verifies: the CUDA backend's data-parallel path (NCCL communicator, flat device gradient
buffer, the shares of each global batch) trains as one process at the global batch.  What
it cannot: NCCL itself (``bench/gpu_check.sh`` runs it on a machine with two GPUs).
"""
import numpy as np
import pytest

import fastnet
from fastnet.cuda_sim import contract as C
from fastnet.train import distributed as D


class LoneHost(D.Communicator):
    """A one-rank host communicator: what NCCL's set-up and host messages go through."""
    name = "lone"

    def __init__(self):
        self.sums = 0

    def allreduce(self, buf, what=""):
        self.sums += 1

    def broadcast(self, buf, what=""):
        pass

    def broadcast_object(self, obj, what=""):
        return obj


def data(n=96):
    X = np.random.default_rng(0).standard_normal((n, 12)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


@pytest.mark.once  # (tens of seconds under the simulator)
def test_the_cuda_backend_sums_gradients_with_nccl_and_trains_as_without():
    X, y = data()
    runs = []
    for distributed in (False, True):
        model = fastnet.MLP([12, 16, 3], dropout=0.2, seed=1, backend="cuda-sim")
        host = LoneHost()
        comm = model.backend_.collective(host) if distributed else None
        h = model.fit(X, y, epochs=2, batch_size=16, distributed=comm)
        runs.append((model.get_weights(), h, host, comm))
    (w0, h0, *_), (w1, h1, host, comm) = runs
    assert isinstance(comm, D.NCCLCommunicator) and isinstance(comm.nccl, C._NCCLStandIn)
    assert model.backend_.collective(host) is comm  # NCCL is set up once per backend and job
    assert h1.params["distributed"]["collective"] == "nccl"
    assert host.sums == 2 * 6 + 2 * 2 + 1  # a gradient sum per step (NCCL's, through the stand-in),
    # the epoch's loss and accuracy sums, and the start's check
    assert all(np.array_equal(w0[k], w1[k]) for k in w0)
    assert h1["loss"] == h0["loss"]


def test_nccl_calls_are_checked_against_cupy():
    nccl = C.module().nccl_process_group(LoneHost())
    dev = C.module().zeros(4, dtype=np.float32)
    stream = C.module().cuda.get_current_stream()
    nccl.all_reduce(dev, dev, "sum", stream)
    with pytest.raises(C.ContractError, match="NCCLBackend.all_reduce"):
        nccl.all_reduce(dev, dev, "sum", stream, "extra")  # CuPy takes no fifth argument
    with pytest.raises(C.ContractError, match="NumPy array"):
        nccl.all_reduce(np.zeros(4, np.float32), dev, "sum", stream)  # NCCL reads device memory
    with pytest.raises(C.ContractError, match="root=1"):
        nccl.broadcast(dev, 1, stream)


# Two ranks in two processes (mpiexec -n 2) on cuda-sim against one process at twice the
# batch: bench/gpu_check.py's nccl section in dry mode (tests/cuda_sim/test_gpu_check_dry.py).


# --------------------------------------------------------------------------
# each rank on its own GPU; collectives on the stream current at each call
# --------------------------------------------------------------------------
class HostRank(LoneHost):
    """Rank ``local_rank`` of ``local_size`` on one host (the NCCL set-up's view of MPI)."""

    def __init__(self, local_rank, local_size):
        super().__init__()
        self.rank = self.local_rank = local_rank
        self.size = self.local_size = local_size


@pytest.fixture
def device_zero():
    yield
    C.module().cuda.Device(0).use()


def test_a_rank_on_another_ranks_gpu_is_refused_before_training(device_zero, monkeypatch):
    # Without fastnet.train.distributed.init() every rank of a host stays on GPU 0.
    monkeypatch.setenv(C.SIM_GPUS, "2")
    model = fastnet.MLP([12, 16, 3], seed=1, backend="cuda-sim")
    with pytest.raises(D.DistributedError, match=r"rank 1 \(local rank 1 of 2 on this host\) runs on GPU 0, "
                       r"but its GPU is 1: call fastnet.train.distributed.init\(\)"):
        model.backend_.collective(HostRank(1, 2))
    X, y = data(32)
    monkeypatch.setattr(D, "world", lambda: HostRank(1, 2))
    with pytest.raises(D.DistributedError, match="its GPU is 1"):
        model.fit(X, y, epochs=1, distributed=True)  # refused before any step
    assert getattr(model, "n_iter_", 0) == 0
    C.module().cuda.Device(1).use()  # what init() does for local rank 1
    comm = model.backend_.collective(HostRank(1, 2))
    assert isinstance(comm, D.NCCLCommunicator)


def test_more_ranks_on_a_host_than_gpus_is_refused(monkeypatch):
    monkeypatch.setenv(C.SIM_GPUS, "1")
    model = fastnet.MLP([12, 16, 3], seed=1, backend="cuda-sim")
    with pytest.raises(D.DistributedError, match=r"2 ranks run on this host but CuPy sees 1 GPU\(s\)"):
        model.backend_.collective(HostRank(0, 2))


def test_init_selects_the_local_ranks_gpu(device_zero, monkeypatch):
    monkeypatch.setenv(C.SIM_GPUS, "2")
    monkeypatch.setattr(D, "world", lambda: HostRank(1, 2))
    D.init()
    assert C.module().cuda.Device().id == 1


def test_collectives_run_on_the_stream_current_at_each_call(monkeypatch):
    model = fastnet.MLP([12, 16, 3], seed=1, backend="cuda-sim")
    comm = model.backend_.collective(LoneHost())
    seen = []
    monkeypatch.setattr(comm.nccl, "all_reduce", lambda src, dst, op, stream: seen.append(stream))
    monkeypatch.setattr(comm.nccl, "broadcast", lambda buf, root, stream: seen.append(stream))
    later = type("Stream", (), {"ptr": 1234})()
    monkeypatch.setattr(type(C.module().cuda), "_stream", later)  # a stream made current after set-up
    buf = C.module().zeros(4, dtype=np.float32)
    comm.allreduce(buf)
    comm.broadcast(buf)
    assert seen == [later, later]  # not the stream current when the communicator was made
