"""Where and how things run: device choice, CPU threads, seeding, and crash-safe checkpoint files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, SpecError
from .files import written_whole

CHECKPOINT_FORMAT = "nascli-checkpoint/1"
CHECKPOINT_FIELDS = {"kind": str, "model": dict, "model_args": dict, "config": dict, "epoch": int, "history": list}


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available on this machine (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise SpecError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def busy_cores(window: float = 0.25) -> float:
    """How many cores other processes keep busy now: the machine's non-idle share over `window`
    seconds (/proc/stat) while this process sleeps, times the cores. The load average lags by a
    minute (it still counts a training that just ended); elsewhere it is the fallback."""
    import time

    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    total = total1 - total0
    return 0.0 if total <= 0 else (1 - (idle1 - idle0) / total) * (os.cpu_count() or 1)


def choose_threads(requested: int | None, cores: int, load: float) -> tuple[int, str | None]:
    """Torch threads for this process and a one-line note, or None. `load`: how many cores other
    jobs keep busy (`busy_cores`). Default: the cores not busy with
    other jobs, at least one - two torch processes with default threads on 2 cores slow each
    other down many times over (measured: a NAS-FCOS controller update took 2.5 s with 1 thread
    beside one busy process, 82 s with 2). An explicit `requested` is kept, with a warning when it
    oversubscribes the cores."""
    busy = min(cores, int(load + 0.5))
    free = max(1, cores - busy)
    if requested is None:
        if free < cores:
            return free, (f"the machine is busy ({load:.1f} of {cores} cores in use): using {free} torch "
                          f"thread{'s' if free > 1 else ''} (--threads N to choose)")
        return cores, None
    if requested > free:
        return requested, (f"warning: --threads {requested} with {load:.1f} of {cores} cores in use by other jobs "
                           f"oversubscribes the CPU; small convolutions then run many times slower "
                           f"(--threads {free} fits)")
    return requested, None


def workers_note(workers: int | None, threads: int) -> str | None:
    """A one-line warning when `workers` local trial processes sharing `threads` torch threads
    would run more threads than that (each takes at least one)."""
    if workers and workers > threads:
        return (f"warning: --workers {workers} with {threads} thread{'s' if threads > 1 else ''} to share "
                f"(--threads, or the free cores): {workers} one-thread trials slow each other down "
                f"(--workers {threads} fits)")
    return None


def use_threads(requested: int | None = None) -> tuple[int, str | None]:
    """Sets torch's intra-op threads by `choose_threads` for this machine now; returns them and the
    note. An OMP_NUM_THREADS in the environment counts as a choice, like `requested`."""
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        requested = max(1, int(os.environ["OMP_NUM_THREADS"]))
    threads, note = choose_threads(requested, usable_cores(), busy_cores())
    set_threads(threads)
    return threads, note


def set_threads(threads: int) -> None:
    """torch's intra-op threads and numba's kernels' threads, both `threads` (see kernels.set_threads)."""
    from . import kernels

    kernels.set_threads(threads)
    torch.set_num_threads(threads)


class MixedPrecision:
    """Automatic mixed precision for one training loop: the forward pass runs under float16
    autocast and the loss is scaled (a step whose gradients overflowed is skipped and the scale
    lowered), while the losses (logs and IoUs of small numbers), the weights, the optimiser, weight
    averaging, BatchNorm recalibration and scoring stay float32 - so rewards are measured the same
    way. Disabled, it is plain float32 training. `training_precision` decides where it is used."""

    def __init__(self, device, enabled: bool):
        self.device_type = torch.device(device).type
        self.enabled = bool(enabled)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.enabled)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.float16, enabled=self.enabled)

    def forward(self, model, *args):
        """model(*args) (any callable) under autocast, its floating-point outputs back in float32 for the loss."""
        with self.autocast():
            out = model(*args)
        return _to_float32(out) if self.enabled else out

    def step(self, optimizer, loss, clip_norm: float | None = None) -> None:
        """backward, optional clipping of the (unscaled) gradients, step."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if clip_norm is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_norm)
        self.scaler.step(optimizer)
        self.scaler.update()


def training_precision(device, amp: bool) -> MixedPrecision:
    """Mixed precision where it is safe and pays: on CUDA when the spec asks (`amp: true`). The CPU
    trains in float32 either way: it gains nothing from float16, and torch 2.14's bfloat16 CPU
    convolution gives wrong weight gradients on 1x1 feature maps (16 of 20 random cases; P7 of a
    64 px crop is 1x1), which turned SP-NAS trials to NaN."""
    return MixedPrecision(device, amp and torch.device(device).type == "cuda")


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict:
    import torchvision

    from . import __version__

    return {"nascli": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of a state dict under `prefix` ("backbone."), the prefix removed: the state of
    that submodule alone, as its own load_state_dict wants it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def save_checkpoint(payload: dict, path) -> Path:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    with written_whole(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "versions": versions(), **payload}, tmp)
    return path


def load_checkpoint(path, map_location="cpu", stand_in_ok: bool = False) -> dict:
    """Loads with weights_only=True; a missing, foreign or truncated file is a CheckpointError, and
    so is a stand-in without trained weights (ledger.py) unless the caller only needs its
    architecture or record (`stand_in_ok`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zipfile, pickle and runtime errors all mean "not ours / damaged"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: field 'format' is not {CHECKPOINT_FORMAT!r}; not a nascli checkpoint")
    _validate_checkpoint(ckpt, path)
    if ckpt.get("stand_in") and not stand_in_ok:
        raise CheckpointError(f"{path}: field 'stand_in': {ckpt['stand_in']}; it has no trained weights to "
                              f"evaluate or export: retrain its row on this machine without --ledger")
    return ckpt


def _validate_checkpoint(ckpt: dict, path) -> None:
    """The fields every reader of a checkpoint relies on, checked once here."""
    from .config import ModelArgs, TrainConfig, validate

    for field, kind in CHECKPOINT_FIELDS.items():
        if not isinstance(ckpt.get(field), kind) or isinstance(ckpt.get(field), bool):
            raise CheckpointError(f"{path}: field '{field}' is missing or not a {kind.__name__}")
    if ckpt["kind"] != "fcos":
        raise CheckpointError(f"{path}: field 'kind' is {ckpt['kind']!r}, expected 'fcos'")
    for name, t in ckpt["model"].items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: field 'model.{name}' is not a tensor")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: field 'model.{name}' holds NaN or inf (a diverged training?)")
    for field, model in (("model_args", ModelArgs), ("config", TrainConfig)):
        try:
            validate(model, ckpt[field], f"{path}: {field}")
        except SpecError as e:
            raise CheckpointError(str(e)) from None
