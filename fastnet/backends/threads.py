"""How many BLAS threads a CPU training step uses, chosen by measurement while it trains.

A CPU step is mostly GEMMs, which NumPy hands to its BLAS (OpenBLAS in the
wheels).  OpenBLAS splits each GEMM into one fixed share per thread and waits
for the last share: when another process holds one of the cores, the share on
that core arrives late and the step waits for it: all threads win on a quiet
machine and lose badly with one core taken ("BLAS threads" in
docs/pages/decisions.md has the figures).  Shared machines (notebooks, CI
runners, a second job) are the usual case, so no fixed count is right.

:class:`ThreadTuner` decides while training, from the steps' own times:

* **probe**: a window of steps with each candidate count (1, half the
  configured count, the configured count: fewest first, twice in a run's first
  probe).  Steps in the first 30 ms after each switch are not timed: waking
  threads, and OpenBLAS threads let go keep spinning for a while; nor is the
  very first step at a count (oneDNN creates its primitives for each thread
  count: a few ms, which would sink the count in a small model's probe).  A window
  times at least 80 ms: a thread just woken runs on the scheduler's credit for
  a while, so a shorter window would flatter the larger count on a shared core.
  The count with the lowest *mean* step time wins (the slow steps are the cost)
  if it is at least 8% faster than the running one (noise does not flip it); a running
  count about to be left on the strength of one window given up (below) gets a second
  window first (a moment's disturbance cut one short: 3 steps at 5x their time, and one
  thread ran for the rest of that epoch; a load cuts the second one short too).  A window
  whose timed steps run 1.25x slower than the best seen (an earlier window of the probe,
  or, in probes after the first, the running count's last 16 steps less their two
  slowest) stops after three: a count that far behind does not come within 8%, and
  probing one thread of a small model would otherwise cost 80 ms of slow steps each
  time (at 1.5x, one thread of 784-128-10, 1.29x slower on an Intel Xeon, was timed for
  whole windows: about 230 steps a probe, 13-23% of the epoch it fell in);
* **run** with the winner; probe again after a while (0.5 s of training,
  doubling up to 8 s while the answer stays the same, back to 0.5 s when it
  changes), and at once when the mean of the last 16 steps, less their two
  slowest, grows past 1.5x the mean in the probe (a load that starts mid-epoch;
  a one-off slow step, such as the first after a pause between epochs, is not
  one: counted, it started a probe nearly every epoch of a ``fit`` per epoch);
* ``fit`` called again on the same work (once per epoch, say) continues the
  same tuner: its choice, its probe schedule, a probe under way;
* at the end of ``fit`` the BLAS thread count is put back as it was.

**Reproducibility.** OpenBLAS's results differ in the last bits between thread counts,
and the tuner's choices depend on timing: two runs with the same seed can then end a few
hundredths of a point of accuracy apart.  ``FASTNET_THREADS=fixed`` gives the same result
for the same seed on the same machine, as before the tuner.

The pool tuned is the one running the step's GEMMs: NumPy's own BLAS (found by its file
path through ``threadpoolctl``), or oneDNN's OpenMP pool where oneDNN runs them
(``precision="bf16"``, and float32 where :mod:`fastnet.backends.gemm_choice` chose it), or MKL's; other
libraries' pools (PyTorch's, say) are left alone.  Without ``threadpoolctl`` installed,
or with ``FASTNET_THREADS=fixed`` in the environment, nothing is tuned: the pools keep
whatever count they have.  Whoever pins a process's threads (a Tune trial, a benchmark's
fixed-thread system) pins both pools: :func:`set_gemm_threads`, :func:`gemm_threads`.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings

#: Environment variable: ``"auto"`` (default) tunes, ``"fixed"`` leaves the BLAS thread count alone.
ENV = "FASTNET_THREADS"

PROBE_STEPS = 4        # timed steps per candidate per probe window at least (or LONG_WINDOW s of them) ...
PROBE_SECONDS = 0.08   # ... and at least this long: a woken thread first runs on the scheduler's
                       # credit, so a short window flatters the larger count on a shared core
LONG_WINDOW = 0.25     # ... a window of long steps (wide layers, large batches) ends after this many seconds
SETTLE_SECONDS = 0.03  # untimed steps after each switch (threads waking; the ones let go still spin)
FIRST_WINDOWS = 2      # windows per candidate in a run's first probe (later probes: one)
GIVE_UP = 1.25         # a window stops early once its mean is this much slower than the best one ...
HOPELESS = 3.0         # ... or once its steps, settling ones included, average this much slower
FIRST_PERIOD = 0.5     # seconds of training between probes, at first
LONGEST_PERIOD = 8.0   # ... doubling up to this while the choice holds
DRIFT = 1.5            # probe again when recent steps are this much slower than after the probe
RECENT = 16            # the running count's last steps, whose mean watches for drift ...
HICCUPS = 2            # ... less their slowest ones: one-off hiccups (the first step after a pause
                       # between epochs, a page fault) are not a load, which slows one step in four
                       # or more (the busy-core measurement in the module docstring)
SWITCH = 1.08          # another count must be this much faster than the running one to replace it

_controllers = None


def numpy_blas():
    """``threadpoolctl`` controllers of the BLAS NumPy uses (empty when none is found)."""
    global _controllers
    if _controllers is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controllers = []
            return _controllers
        import numpy

        root = os.path.dirname(os.path.abspath(numpy.__file__))
        blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        # numpy.libs/ (wheels) or numpy/.libs beside the package; else a system BLAS that is
        # the only one loaded
        own = [c for c in blas if os.path.abspath(c.filepath).startswith(root)]
        _controllers = own or (blas if len(blas) == 1 else [])
    return _controllers


def blas_threads():
    """NumPy's BLAS thread count now, or None when it cannot be read."""
    libs = numpy_blas()
    return libs[0].get_num_threads() if libs else None


def set_blas_threads(n):
    for c in numpy_blas():
        c.set_num_threads(n)


def onednn_pool():
    """oneDNN's thread pool ``(name, get count, set count)`` where oneDNN loads, else None."""
    from fastnet.backends import gemm_onednn

    return gemm_onednn.POOL if gemm_onednn.available() else None


def other_pools():
    """The pools besides NumPy's BLAS a CPU step's GEMMs can run in: oneDNN's where it loads,
    MKL's where this process has loaded it (fastnet.backends.gemm_choice measured it, or it runs)."""
    from fastnet.backends import gemm_mkl

    pools = [onednn_pool()] + [gemm_mkl.POOL if gemm_mkl.loaded() else None]
    return [p for p in pools if p is not None]


def set_gemm_threads(n):
    """Every pool a CPU step's GEMMs can run in on ``n`` threads: NumPy's BLAS, oneDNN's
    (bf16 steps, and float32 ones where fastnet.backends.gemm_choice chose it) where it loads, and
    MKL's where it is loaded."""
    set_blas_threads(n)
    for pool in other_pools():
        pool[2](n)


@contextlib.contextmanager
def gemm_threads(n):
    """:func:`set_gemm_threads` for the ``with`` block; each pool's count put back after it."""
    pools = other_pools()
    before = blas_threads(), [pool[1]() for pool in pools]
    set_gemm_threads(n)
    try:
        yield
    finally:
        if before[0] is not None:
            set_blas_threads(before[0])
        for pool, count in zip(pools, before[1]):
            if count is not None:
                pool[2](count)


def candidates(n):
    """Thread counts worth trying when ``n`` are configured: n, n // 2 and 1."""
    return sorted({n, max(1, n // 2), 1}, reverse=True)


class NoTuner:
    """Nothing to tune (a GPU backend, one thread, ``FASTNET_THREADS=fixed``)."""

    def step_done(self, full):
        pass

    def mark(self):
        pass

    def close(self):
        pass

    def summary(self):
        return None


class SharedCores(NoTuner):
    """Processes of one data-parallel job on this host (``ranks``) share its cores: the
    GEMMs' thread pool (``pool``, as for :func:`tuner`; default NumPy's BLAS) gets
    ``cores // ranks`` threads (at least 1, never more than it had) while a ``fit`` runs,
    put back by :meth:`close`.  Nothing is timed: one rank's thread count changing would
    change every rank's step (they wait for each other)."""

    def __init__(self, ranks, pool=None):
        _, get, self._apply = pool or ("blas", blas_threads, set_blas_threads)
        self.before = get()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, cores // max(1, ranks))
        if self.before is not None:
            self.threads = min(self.threads, self.before)
            self._apply(self.threads)

    def close(self):
        if self.before is not None:
            self._apply(self.before)

    def summary(self):
        return {"mode": "shared", "threads": self.threads}


class ThreadTuner:
    """Chooses the GEMMs' thread count (NumPy's BLAS, or the pool ``apply`` sets) from
    measured step times; see the module docstring.

    Call :meth:`step_done` after every training step (``full``: a whole batch,
    so its time compares with the others), :meth:`mark` where steps resume
    after other work (an evaluation between epochs) and :meth:`close` at the
    end; :meth:`resume` starts another run of the same work (``fit`` called
    once per epoch) where the last one stopped, probe schedule and all.
    """

    def __init__(self, configured, clock=time.perf_counter, apply=set_blas_threads):
        self.configured = configured
        self.options = candidates(configured)
        self.clock, self.apply = clock, apply
        self.threads = configured
        self.steps_with = dict.fromkeys(self.options, 0)
        self.decisions = []   # this run's probes' winners
        self.choice = None    # the last probe's winner, whichever run it was in
        self._last = clock()
        self.period = FIRST_PERIOD
        self._visited = set()  # counts that have had a window
        self._start_probe(FIRST_WINDOWS)

    # -- the schedule of probes
    def _set(self, n):
        if n != self.threads:
            self.apply(n)
            self.threads = n

    def _start_probe(self, windows=1, reference=None):
        """``reference``: ``(count, mean step seconds)`` of the running count's last steps, as
        they are now (a drift included): a window whose steps are already far slower than
        these gives up early (GIVE_UP, HOPELESS), as it would against an earlier window of
        the same probe.  None for a run's first probe and one restarted mid-probe."""
        self.probing = True
        self._reference = reference
        # fewest threads first: a window never follows one with more (whose threads spin on)
        self._windows = sorted(self.options) * windows
        self._times = {t: [] for t in self.options}
        self._windows_of = dict.fromkeys(self.options, 0)  # windows opened in this probe, per count
        self._given_up = set()  # counts whose window in this probe was given up early
        self._open_window()

    def _open_window(self):
        self._window = self._windows.pop(0)
        self._windows_of[self._window] += 1
        # A count's first step may pay one-time costs (oneDNN creates its primitives for each
        # thread count: a few ms, many steps of a small model): in the count's first window
        # that step is not part of the window, settling or giving up included.
        self._first_visit = self._window not in self._visited
        self._visited.add(self._window)
        self._left = PROBE_STEPS
        self._settled = self._window_end = None
        self._fresh = True  # steps with a new count are not timed until it settles
        self._set(self._window)

    def _run(self, choice, baseline, until):
        self._set(choice)
        self.probing = False
        self._baseline = baseline
        self._recent = []
        self._run_until = until

    def _finish_probe(self):
        timed = {t: statistics.fmean(v) for t, v in self._times.items() if v}
        best = min(timed, key=timed.get)
        keep = self.configured if self.choice is None else self.choice
        if keep in timed and timed[best] * SWITCH > timed[keep]:
            best = keep  # not clearly faster: a moment's noise on a quiet machine does not flip it
        if best != keep and keep in self._given_up and self._windows_of[keep] == 1:
            # The count to leave had one window, given up after a few steps: a moment's
            # disturbance (measured: 3 steps of 784-512-512-10 at 5x their time once the second
            # thread was back) or a load.  One more window of it first: a load gives it up again
            # within a few steps.
            self._times[keep] = []
            self._windows.append(keep)
            self._open_window()
            return
        self.period = min(self.period * 2, LONGEST_PERIOD) if best == self.choice else FIRST_PERIOD
        self.choice = best
        self.decisions.append(best)
        self._run(best, timed[best], self.clock() + self.period)

    def _probe_step(self, seconds, full):
        times = self._times[self._window]
        if self._settled is None and self._first_visit:
            self._first_visit = False
            return
        if self._settled is None:
            self._opened, self._steps_in_window = self._last - seconds, 0
            self._settled = self._opened + SETTLE_SECONDS
        self._steps_in_window += 1
        # the mean, not the median: on a shared core the slow steps are the cost
        others = [statistics.fmean(v) for t, v in self._times.items() if v and t != self._window]
        if self._reference is not None and self._reference[0] != self._window:
            others.append(self._reference[1])
        best = min(others) if others else None
        whole = (self._last - self._opened) / self._steps_in_window
        hopeless = best is not None and whole > HOPELESS * best
        if self._fresh and not hopeless:
            if self._last < self._settled:
                return
            self._fresh = False
            self._window_end = self._last + PROBE_SECONDS
            return
        if full and not self._fresh:
            times.append(seconds)
            self._left -= 1
        hopeless = hopeless or (len(times) >= 3 and best is not None
                                and statistics.fmean(times) > GIVE_UP * best)
        if hopeless and not times:
            times.append(whole)  # given up while settling: its steps are its measure
        if hopeless:
            self._given_up.add(self._window)
        if not hopeless:  # (a window given up while settling has no timed part to finish)
            enough = self._left <= 0 or self._last >= self._window_end - PROBE_SECONDS + LONG_WINDOW
            if not enough or self._last < self._window_end:
                return
        if self._windows:
            self._open_window()
        elif any(self._times.values()):
            self._finish_probe()
        else:  # partial batches only so far: probe again
            self._start_probe()

    def step_done(self, full=True):
        try:
            self._step_done(full)
        except Exception as exc:  # a fault here must not end the user's training
            self.step_done = NoTuner.step_done.__get__(self)
            self.apply(self.configured)
            self.threads = self.configured
            warnings.warn(f"fastnet's BLAS thread tuner stopped ({type(exc).__name__}: {exc}); training goes "
                          f"on with {self.configured} threads", RuntimeWarning, stacklevel=3)

    def _step_done(self, full):
        now = self.clock()
        seconds, self._last = now - self._last, now
        self.steps_with[self.threads] += 1
        if self.probing:
            self._probe_step(seconds, full)
            return
        if full:
            self._recent.append(seconds)
            if len(self._recent) > RECENT:
                del self._recent[0]
            if self._baseline is None and len(self._recent) == RECENT:
                self._baseline = self._recent_mean()
        drifted = (self._baseline is not None and len(self._recent) == RECENT
                   and self._recent_mean() > DRIFT * self._baseline)
        if drifted or now >= self._run_until:
            self._start_probe(reference=(self.threads, self._recent_mean()) if self._recent else None)

    def _recent_mean(self):
        """The mean of the running count's recent steps less their ``HICCUPS`` slowest (all of
        them while there are no more than that)."""
        recent = self._recent
        return statistics.fmean(sorted(recent)[:len(recent) - HICCUPS] if len(recent) > HICCUPS else recent)

    def mark(self):
        """Steps start now (after an evaluation, callbacks or another run, which are not steps):
        the probe window under way and the time of the next probe move on by the gap."""
        now = self.clock()
        gap, self._last = now - self._last, now
        if self.probing:
            if self._settled is not None:
                self._opened += gap
                self._settled += gap
            if self._window_end is not None:
                self._window_end += gap
        else:
            self._run_until += gap

    def close(self):
        """Put the configured thread count back (the tuner's state is kept for :meth:`resume`)."""
        self.apply(self.configured)

    def resume(self):
        """Start another run of the same work: the running count is set again, the probe under
        way (if any) goes on, and the summary counts this run's steps."""
        self.steps_with = dict.fromkeys(self.options, 0)
        self.decisions = []
        self.apply(self.threads)
        self.mark()
        return self

    def summary(self):
        """What was chosen: the probes' winners in order and the steps run with each count."""
        return {"configured": self.configured, "decisions": list(self.decisions),
                "steps_with": {str(k): v for k, v in self.steps_with.items()}}


_tuners: dict = {}


def mode():
    """``FASTNET_THREADS``, checked: ``"auto"`` or ``"fixed"``."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "fixed"):
        raise ValueError(f"{ENV} must be 'auto' or 'fixed', got {os.environ[ENV]!r}")
    return value


def tuner(work=None, pool=None):
    """A :class:`ThreadTuner` for a CPU training run, or :class:`NoTuner` when there is nothing to tune.

    ``work``: a hashable description of the step (shapes, batch size); runs of the same
    work (and the same configured thread count) continue one tuner.  ``pool``: the thread
    pool of the step's GEMMs as ``(name, get_count, set_count)``; default NumPy's BLAS
    (``precision="bf16"``: oneDNN's OpenMP pool)."""
    name, get, apply = pool or ("blas", blas_threads, set_blas_threads)
    n = get() if mode() == "auto" else None
    if not n or n < 2:
        return NoTuner()
    # The same work continues one tuner (a probe under way goes on): fit called once per epoch
    # would otherwise never finish a probe whose windows outlast its epoch.
    key = (work, n, name)
    if key not in _tuners:
        _tuners[key] = ThreadTuner(n, apply=apply)
    return _tuners[key].resume()
