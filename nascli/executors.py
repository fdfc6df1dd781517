"""Where trials run: in this process (`local`, the default), in N processes on this machine
(`local` with `--workers N`), or as Ray core tasks (`ray`).

`run_search` keeps the strategy and the run database on the driver. An executor only runs
evaluations, up to `slots` at once, and hands each result back as it finishes; the driver
commits it before it asks for more. So the database stays the one source of truth, a driver
that dies leaves pending rows that `--resume` re-queues on any executor, and Ray is never more
than a pool of workers (no Ray Tune, no Ray-side state).

Faults under Ray: a worker that dies (killed process, lost node, Ray's memory monitor) re-queues
its trial up to `retries` times, then the trial fails with the reason; a trial's own exception
is not retried: the trial fails with the exception's message and the search goes on.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path

from .errors import NascliError, SpecError
from .trial import TrialResult

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """In-process, one trial at a time, in submission order: exactly the serial search loop.
    A trial's exception propagates (a bug in an evaluation is not hidden as a failed trial)."""

    name = "local"
    slots = 1

    def __init__(self):
        self._queue: deque = deque()

    def check_paths(self, readable: dict, writable: dict | None = None) -> None:
        """The driver is the worker: its own paths were checked when they were opened."""

    def submit(self, key, fn, *args) -> None:
        self._queue.append((key, fn, args))

    def busy(self) -> int:
        return len(self._queue)

    def next_done(self):
        key, fn, args = self._queue.popleft()
        return key, fn(*args)

    def close(self) -> None:
        self._queue.clear()


class ProcessPool:
    """`--workers N` on this machine: N trials at once, each in a process of its own with the
    driver's torch threads shared out (threads // N each, at least 1). A proxy trial is mostly
    small convolutions whose per-call overhead one thread pays as well as two, so on a small CPU
    N one-thread trials side by side score about N times as many candidates an hour as one
    N-thread trial (benchmarks/trial.json). A trial's reward is the one a serial search with the
    same threads per trial computes, bit for bit. As in-process, a trial's exception propagates.
    Workers ignore Ctrl-C (the driver stops them) and die with the driver (Linux)."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.slots, self.threads = workers, max(1, threads // workers)
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(self.threads,))
        self._futures: dict = {}  # Future -> (submission number, key)
        self._submitted = 0

    def check_paths(self, readable: dict, writable: dict | None = None) -> None:
        """The workers share the driver's files system: its paths were checked when they were opened."""

    def submit(self, key, fn, *args) -> None:
        self._submitted += 1
        self._futures[self._pool.submit(fn, *args)] = (self._submitted, key)

    def busy(self) -> int:
        return len(self._futures)

    def next_done(self):
        """The earliest-submitted of the finished trials, as (key, result)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self._futures[f][0])
        _, key = self._futures.pop(future)
        return key, future.result()

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures = {}
        # ProcessPoolExecutor has no public way to stop a running call before Python 3.14's
        # terminate_workers(); its process table is read defensively
        for process in list((getattr(self._pool, "_processes", None) or {}).values()):
            process.terminate()  # a running trial is abandoned: its row stays pending for --resume
        self._pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(threads: int) -> None:
    """A pool worker: `threads` torch threads, Ctrl-C left to the driver, killed with the driver."""
    import signal

    from .runtime import set_threads

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned worker ends with its current trial


def _run_trial(fn, args, threads: int):
    """A Ray task: one evaluation with as many torch threads as CPUs it was given (two trials
    that each take every core of a node thrash instead of running side by side)."""
    from .runtime import set_threads

    set_threads(max(1, int(threads)))
    return fn(*args)


def probe_paths(readable: dict, writable: dict):
    """A Ray task pinned to one node: which of the driver's paths that node cannot use."""
    import socket

    bad = [f"{label} {p} (not readable)" for label, p in readable.items()
           if not (os.path.exists(p) and os.access(p, os.R_OK))]
    bad += [f"{label} {p} (not writable)" for label, p in writable.items()
            if not (os.path.isdir(p) and os.access(p, os.W_OK))]
    return socket.gethostname(), bad


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the trial's own exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


class RayExecutor:
    """Trials as Ray core tasks, each with the spec's `resources` (CPUs, GPUs); at most `slots`
    in flight: as many as the cluster fits, or `workers` if fewer."""

    name = "ray"

    def __init__(self, address: str = "auto", cpus: float = 1, gpus: float = 0, retries: int = 2,
                 workers: int | None = None):
        import ray

        self.ray, self.cpus, self.gpus, self.retries = ray, cpus, gpus, retries
        self.started = not ray.is_initialized()
        if self.started:
            try:
                if address == "local":  # a private instance on this machine, for this search only
                    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise NascliError(f"--ray-address {address}: cannot start or reach a Ray cluster "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        total = ray.cluster_resources()
        fits = int(total.get("CPU", 0) // cpus)
        if gpus:
            fits = min(fits, int(total.get("GPU", 0) // gpus))
        if fits < 1:
            self.close()
            raise SpecError(f"field 'resources': a trial asks for {cpus} CPU and {gpus} GPU; the Ray cluster "
                            f"has {total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU in all")
        self.slots = min(fits, workers) if workers else fits
        self._task = ray.remote(_run_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._refs: dict = {}  # ObjectRef -> (key, fn, args, attempt)
        self._lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                      ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError,
                      ray.exceptions.LocalRayletDiedError)

    def check_paths(self, readable: dict, writable: dict | None = None) -> None:
        """Every alive node that could run a trial must read the cache (and write the run's weights
        where a method writes them): a path a worker cannot use is an error now, not mid-run."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        readable = {k: str(Path(p).resolve()) for k, p in readable.items()}
        writable = {k: str(Path(p).resolve()) for k, p in (writable or {}).items()}
        probe = self.ray.remote(probe_paths)
        nodes = [n for n in self.ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) >= self.cpus]
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(readable, writable) for n in nodes]
        for host, bad in self.ray.get(refs):
            if bad:
                raise NascliError(f"--executor ray: a worker on {host} cannot use {'; '.join(bad)}; "
                                  f"put them on a path every node shares")

    def submit(self, key, fn, *args, attempt: int = 0) -> None:
        threads = max(1, int(self.cpus))
        self._refs[self._task.remote(fn, args, threads)] = (key, fn, args, attempt)

    def busy(self) -> int:
        return len(self._refs)

    def next_done(self):
        """The next finished trial as (key, result); a lost worker's trial is re-queued quietly."""
        while True:
            ready, _ = self.ray.wait(list(self._refs), num_returns=1)
            key, fn, args, attempt = self._refs.pop(ready[0])
            try:
                return key, self.ray.get(ready[0])
            except self._lost as e:
                if attempt < self.retries:
                    self.submit(key, fn, *args, attempt=attempt + 1)
                    continue
                return key, TrialResult("failed", reason=f"worker lost {attempt + 1} times: {_one_line(e)}")
            except self.ray.exceptions.RayTaskError as e:
                return key, TrialResult("failed", reason=f"error: {_one_line(e)}")

    def close(self) -> None:
        for ref in list(getattr(self, "_refs", {})):
            self.ray.cancel(ref, force=True)
        self._refs = {}
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


def check_executor(name: str, workers: int | None = None) -> None:
    """The option errors, raised before a search writes anything."""
    if name not in EXECUTORS:
        raise SpecError(f"--executor {name}: choose one of {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise NascliError("--executor ray: Ray is not installed; pip install 'nascli[ray]'") from None


def make_executor(name: str, spec, address: str = "auto", workers: int | None = None):
    """The executor `--executor NAME` asks for: local in this process, or `workers` local processes
    sharing this process's torch threads; Ray sized by the spec's per-trial `resources`."""
    check_executor(name, workers)
    if name == "local":
        import torch

        return ProcessPool(workers, torch.get_num_threads()) if workers and workers > 1 else LocalExecutor()
    r = spec.resources
    return RayExecutor(address, r.cpus, r.gpus, r.retries, workers)


_LOOPBACK_UP = """
import fcntl, os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS |= IFF_UP
os.execvp(sys.argv[1], sys.argv[1:])
"""


def private_network(argv: list[str]) -> list[str]:
    """`argv` run inside a new network namespace with only loopback up (`unshare -n`, root): a Ray
    cluster the tests or benchmarks start there cannot bind or reach the machine's own interfaces."""
    return ["unshare", "-n", sys.executable, "-c", _LOOPBACK_UP, *argv]
