"""Latency as a user deploys it: wall time of one image, batch 1, forward and post-processing.

Why this is its own module: a single timing is noise (the same control read 116.9 ms in one BCCD
promotion and 89.0 in the next, the machine's speed drifts 10-30 % within minutes), so every
number here is the *median of many images after warm-up*, with its spread (25th-75th percentile)
and the thread count it ran at; and architectures compared with each other are timed
*interleaved* in one process - each round times every model once on the same image, in a
shuffled order - so drift hits every arm alike, and a ratio to the control comes with a bootstrap
interval over the rounds.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from .errors import SpecError

#: Images timed and discarded before measuring (allocator, caches, lazy inits).
WARMUP = 3
#: Timed images: the median of fewer is not worth quoting (issue 42: >= 30).
MIN_IMAGES = 30


def environment(device) -> dict:
    """What a latency is only valid for: device and processor, threads, torch version, runtime."""
    device = torch.device(device)
    return {"device": str(device), "processor": processor(device), "threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "runtime": "torch"}


def processor(device) -> str:
    """The CPU model (or the GPU's name): two machines' tables never mix."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, device) -> float:
    """Seconds `fn()` takes, the GPU synchronised on both sides."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def spread(seconds) -> dict:
    """Median and quartiles of per-image times, in milliseconds."""
    ms = 1000 * np.asarray(seconds, dtype=np.float64)
    return {"latency_ms": float(np.median(ms)), "latency_p25_ms": float(np.percentile(ms, 25)),
            "latency_p75_ms": float(np.percentile(ms, 75)), "latency_images": int(len(ms))}


def measure(run_image, inputs, device, *, images: int = MIN_IMAGES, warmup: int = WARMUP) -> dict:
    """Latency of `run_image(x)` over `images` inputs (cycling through `inputs`) after `warmup`:
    median, quartiles, and the environment it ran in."""
    inputs = list(inputs)
    times = []
    with torch.inference_mode():
        for i in range(warmup + images):
            t = timed(lambda: run_image(inputs[i % len(inputs)]), device)
            if i >= warmup:
                times.append(t)
    return {**spread(times), **environment(device)}


def interleaved(runners: dict, inputs, device, *, reference: str, images: int = MIN_IMAGES,
                warmup: int = WARMUP, seed: int = 0, draws: int = 2000) -> dict:
    """Times every `runners[name](x)` on the same inputs, interleaved: each round takes one input
    and runs every model once in a shuffled order. Returns per name its spread and its ratio to
    `reference`: the ratio of medians, with a 95 % bootstrap interval over the rounds (resampled
    alike for both arms, so the pairing is kept)."""
    if reference not in runners:
        raise ValueError(f"reference {reference!r} is not one of {sorted(runners)}")
    inputs, names = list(inputs), list(runners)
    rng = np.random.default_rng(seed)
    times = {name: [] for name in names}
    with torch.inference_mode():
        for i in range(warmup + images):
            x = inputs[i % len(inputs)]
            for k in rng.permutation(len(names)):
                t = timed(lambda: runners[names[k]](x), device)
                if i >= warmup:
                    times[names[k]].append(t)
    ref = np.asarray(times[reference])
    picks = rng.integers(0, images, (draws, images))
    ref_medians = np.median(ref[picks], axis=1)
    out = {}
    for name in names:
        t = np.asarray(times[name])
        ratios = np.median(t[picks], axis=1) / ref_medians
        out[name] = {**spread(t), "ratio": float(np.median(t) / np.median(ref)),
                     "ratio_interval": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]}
    return {"reference": reference, "models": out, **environment(device)}


#: What a latency can be timed under: torch itself, or the network exported to ONNX (deploy.py).
RUNTIMES = ("torch", "onnxruntime")


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise SpecError(f"--runtime {runtime}: choose {' or '.join(RUNTIMES)}")


def parse_latency_target(text) -> tuple[float, str] | None:
    """'1.0x' -> (1.0, 'x'): a multiple of the control's latency; '80ms' or '80' -> (80.0, 'ms')."""
    if text is None or text == "":
        return None
    raw = str(text).strip().lower()
    unit = "x" if raw.endswith("x") else "ms"
    number = raw[:-1] if unit == "x" else raw.removesuffix("ms")
    try:
        value = float(number)
    except ValueError:
        raise SpecError(f"--latency-target {text!r}: give a multiple of the control's latency (1.0x) "
                        f"or milliseconds (80ms)") from None
    if not value > 0:
        raise SpecError(f"--latency-target {text!r}: must be positive")
    return value, unit


def within_target(latency: dict | None, target) -> bool | None:
    """Whether a measured latency (with its ratio to the control) meets the target; None if unknown."""
    parsed = parse_latency_target(target)
    if parsed is None or not latency:
        return None
    value, unit = parsed
    return latency["ratio"] <= value if unit == "x" else latency["latency_ms"] <= value
