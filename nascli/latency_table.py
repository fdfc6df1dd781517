"""A per-op latency table for one machine: what a candidate will cost where it runs, in milliseconds,
before it is trained (FBNet's and OFA's lookup table, built lazily at the shapes that occur).

Why per op and not per candidate: timing a whole detector takes 30 images to be worth quoting,
while a search asks for hundreds of candidates that share almost every op. The table records every
aten op a detector's forward pass calls at batch 1 - keyed by the op, its tensors' shapes, dtypes
and layout and its other arguments - timed where it occurs (in the real pass, on the real
tensors), once per key; a detector's prediction is the sum over the ops it calls, every key timed
once for all later candidates. Keyed below the module level, it sees everything a forward does
(functional resizes and sums included), whatever space the detector comes from.

What additivity misses - the Python between ops, caches warmed by repetition, the
post-processing - is a linear correction `Σ op + b·ops + c` fitted on end-to-end measurements of
a few detectors (`calibrate`) for each context (backbone, widths, input size), stored with the
table and validated against held-out detectors (benchmarks/bench_latency.py).

The table is one json file per machine and runtime under the cache folder
(`latency/<key>.json`, key = device, processor, threads, torch version): another machine, thread
count or torch build never reads it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from .files import written_whole
from .latency import environment, timed

FORMAT = "nascli-latency-table/1"
#: Timed calls of a new op key (after one untimed call): the median is kept.
REPEATS = 5


def _describe(value) -> str:
    """An argument as part of an op's key: a tensor by dtype, shape and whether it is contiguous."""
    if isinstance(value, torch.Tensor):
        layout = "c" if value.is_contiguous() else "cl" if value.dim() == 4 and value.is_contiguous(
            memory_format=torch.channels_last) else "s" + ",".join(map(str, value.stride()))
        return f"{str(value.dtype).removeprefix('torch.')}[{','.join(map(str, value.shape))}]{layout}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_describe(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def op_key(func, args, kwargs) -> str:
    parts = [_describe(a) for a in args] + [f"{k}={_describe(v)}" for k, v in sorted(kwargs.items())]
    return f"{func}({';'.join(parts)})"


class _OpRecorder(TorchDispatchMode):
    """Records the key of every aten op called inside, timing the ones the table lacks in place."""

    def __init__(self, table: "LatencyTable", device):
        super().__init__()
        self.table, self.device, self.calls, self.new = table, device, [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        key = op_key(func, args, kwargs)
        if key not in self.table.ops:
            self.table.ops[key] = self._time(func, args, kwargs)
            self.new += 1
        self.calls.append(key)
        return func(*args, **kwargs)

    def _time(self, func, args, kwargs) -> float:
        mutable = func._schema.is_mutable  # an in-place op runs on copies, so the real pass is unchanged
        fresh = (lambda: tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, (args, kwargs))) \
            if mutable else (lambda: (args, kwargs))
        times = []
        for k in range(REPEATS + 1):
            a, kw = fresh()
            t = timed(lambda: func(*a, **kw), self.device)
            if k:
                times.append(t)
        return 1000 * float(np.median(times))


class LatencyTable:
    """op key -> milliseconds on this machine, and the correction fitted end to end."""

    def __init__(self, env: dict, ops: dict | None = None, fits: dict | None = None, path=None):
        self.env, self.ops, self.path = env, dict(ops or {}), Path(path) if path else None
        self.fits = dict(fits or {})  # context (backbone, widths, input size) -> the fitted correction

    # ---------------------------------------------------------------- files

    @staticmethod
    def key(env: dict) -> str:
        fields = {k: env[k] for k in ("device", "processor", "threads", "torch", "runtime")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def for_machine(cls, folder, device="cpu") -> "LatencyTable":
        """This machine's table in `folder` (latency/<key>.json), empty if there is none yet."""
        env = environment(device)
        path = Path(folder) / "latency" / f"{cls.key(env)}.json"
        try:
            saved = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):  # a damaged table is a cache: it is measured again
            saved = {}
        if isinstance(saved, dict) and saved.get("format") == FORMAT:
            return cls(env, saved["ops"], saved.get("fits"), path)
        return cls(env, path=path)

    def save(self, path=None) -> Path:
        """Written atomically: a kill never leaves half a table."""
        path = Path(path or self.path)
        with written_whole(path) as tmp:
            tmp.write_text(json.dumps({"format": FORMAT, "environment": self.env, "fits": self.fits, "ops": self.ops},
                                      indent=0, sort_keys=True))
        self.path = path
        return path

    # ---------------------------------------------------------------- prediction

    def trace(self, model, example) -> dict:
        """One forward pass of `model(example)` at batch 1 under the recorder: the ops it calls (the
        new ones timed now), their sum in ms and their count."""
        return self.trace_call(lambda: model(example), example.device)

    def trace_call(self, fn, device) -> dict:
        """`fn()` under the recorder (any piece of a forward pass, e.g. one edge of a decoder)."""
        recorder = _OpRecorder(self, device)
        with torch.inference_mode(), recorder:
            fn()
        return {"sum_ms": float(sum(self.ops[k] for k in recorder.calls)), "ops": len(recorder.calls),
                "new": recorder.new}

    @staticmethod
    def calibrate(traced: list[dict], measured_ms: list[float]) -> dict:
        """Fits measured - Σ op ≈ per_op·ops + fixed by least squares over detectors (one detector:
        the fixed part alone) and returns the fit. The ops' sum keeps its unit weight: a free
        scale fitted on a handful of detectors overfits (measured: 4.4 % median error on held-out
        decoders against 2.2 % with the scale fixed at 1). The per-op part is an overhead, never
        negative: a noisy fit that makes it so is refitted with the fixed part alone (seen on a
        loaded machine, where a negative per-op part extrapolated to a detector of many more ops
        predicted -292 ms); the fixed part is bounded below too (BCCD's fit: -3.1 ms on sums of
        80-150 ms)."""
        sums = np.array([t["sum_ms"] for t in traced])
        rest = np.asarray(measured_ms, dtype=np.float64) - sums
        per_op, fixed = 0.0, float(rest.mean())
        if len(rest) >= 2:
            x = np.array([[t["ops"], 1.0] for t in traced], dtype=np.float64)
            (slope, intercept), *_ = np.linalg.lstsq(x, rest, rcond=None)
            if slope >= 0:
                per_op, fixed = slope, intercept
        # nor may the fixed part take away more than half of the smallest detector's ops (on a loaded
        # machine ops timed alone read slow, and a control predicted at <= 0 ms breaks every '1.0x')
        fixed = max(fixed, -0.5 * float(sums.min()))
        return {"per_op": float(per_op), "fixed": float(fixed), "detectors": int(len(rest)),
                "fitted": time.strftime("%Y-%m-%d %H:%M:%S")}


def corrected(traced: dict, fit: dict | None) -> float:
    """A traced detector's predicted ms: its ops' sum plus the fitted per-op and fixed parts (none
    before a calibration)."""
    fit = fit or {"per_op": 0.0, "fixed": 0.0}
    return traced["sum_ms"] + fit["per_op"] * traced["ops"] + fit["fixed"]


# ---------------------------------------------------------------- a search's candidates, as promoted


def promoted_input(config: dict) -> tuple[int, int]:
    """(height, width) a promoted detector runs at: the median image of the baseline's training
    json resized as its evaluation resizes it and padded to a multiple of 32 (the min size square
    where the json is gone)."""
    from .data.coco import Transform
    from .train import padded_size

    transform = Transform(config["min_size"], config["max_size"])
    try:
        images = json.loads(Path(config["data"]).read_text())["images"]
        width = float(np.median([im["width"] for im in images]))
        height = float(np.median([im["height"] for im in images]))
    except (OSError, ValueError, KeyError, TypeError):
        width = height = config["min_size"]
    return padded_size(transform, width, height)


class CandidateLatency:
    """What a candidate will cost once promoted, before it is trained: its genotype built as
    `retrain` builds it (the baseline's backbone, width and classes; random weights, which do not
    change the time), at the promoted input size, predicted from the machine's table - the forward
    pass's ops plus the post-processing in the fit."""

    def __init__(self, table: LatencyTable, model_args: dict, size: tuple[int, int], device="cpu"):
        self.table, self.model_args, self.size = table, dict(model_args), tuple(size)
        self.device = torch.device(device)
        self.example = torch.randn(1, 3, *self.size, generator=torch.Generator().manual_seed(0)).to(self.device)
        self._predicted: dict = {}
        self._backbone = None  # (its trace, its features of `example`, its channels), made once

    @classmethod
    def for_checkpoint(cls, checkpoint, folder, device="cpu") -> "CandidateLatency":
        from .runtime import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        return cls(LatencyTable.for_machine(folder, device), ckpt["model_args"], promoted_input(ckpt["config"]),
                   device)

    @property
    def context(self) -> str:
        """What a fit holds for: the backbone, widths, classes and the input size."""
        a = self.model_args
        return f"{a['backbone']}-w{a['width']}-h{a.get('head_width')}-c{a['num_classes']}-{self.size[0]}x{self.size[1]}"

    def detector(self, genotype):
        from .train import build_detector

        args = {**self.model_args, "genotype": json.loads(genotype.to_json()) if genotype is not None else None,
                "deep_supervision": False}
        torch.manual_seed(0)
        return build_detector(args).to(self.device).eval()

    def runner(self, model):
        """One image through the network and its post-processing, as `evaluate` times it."""
        size = [self.size]
        return lambda x: model.postprocess(model(x), size)

    def predict(self, genotype) -> float:
        """Predicted ms/image (cached per genotype); the table learns every op it had not seen.
        A decoder over the baseline's backbone is traced alone, on the backbone's features traced
        once: the same ops as the whole detector's pass, summed in another order, without building
        and running the backbone again for every candidate (that took ~0.4 s of a skip's ~0.47 s on
        the demo)."""
        from .spaces import searches_backbone

        key = genotype.to_json() if genotype is not None else "control"
        if key not in self._predicted:
            if genotype is not None and searches_backbone(genotype):
                traced = self.table.trace(self.detector(genotype), self.example)
            else:
                traced = self.decoder_trace(genotype)
            self._predicted[key] = corrected(traced, self.table.fits.get(self.context))
        return self._predicted[key]

    def decoder_trace(self, genotype) -> dict:
        """The whole detector's trace, as the backbone's (once) plus this decoder's on its features."""
        from .models.backbones import build_backbone
        from .train import detector_decoder

        if self._backbone is None:
            torch.manual_seed(0)
            net = build_backbone(self.model_args["backbone"], None, self.model_args.get("frozen_bn", False))
            net = net.to(self.device).eval()
            out = {}
            traced = self.table.trace_call(lambda: out.setdefault("features", net(self.example)), self.device)
            self._backbone = (traced, out["features"], net.out_channels)
        backbone, features, channels = self._backbone
        torch.manual_seed(0)
        decoder = detector_decoder({**self.model_args, "deep_supervision": False}, channels, genotype)
        decoder = decoder.to(self.device).eval()
        traced = self.table.trace_call(lambda: decoder(features), self.device)
        return {"sum_ms": backbone["sum_ms"] + traced["sum_ms"], "ops": backbone["ops"] + traced["ops"],
                "new": traced["new"]}

    def cost(self, fn) -> float:
        """Predicted ms of a piece of a forward pass, `fn()`: its ops' sum plus the fitted per-op
        part (the fixed part belongs to the whole detector). Pieces add up to `predict`: one
        detector's prediction is the sum of the costs of the pieces it runs, plus the fit's fixed."""
        traced = self.table.trace_call(fn, self.device)
        fit = self.table.fits.get(self.context) or {"per_op": 0.0}
        return traced["sum_ms"] + fit["per_op"] * traced["ops"]

    def calibrate(self, genotypes, images: int = 30) -> dict:
        """Measures the detectors of `genotypes` end to end (interleaved, `images` each) and fits
        the table's correction for this context on them; saves the table. Returns the fit with each
        detector's traced sum, measured and predicted ms."""
        from .latency import interleaved

        models = [self.detector(g) for g in genotypes]
        traced = [self.table.trace(m, self.example) for m in models]
        measured = interleaved({str(k): self.runner(m) for k, m in enumerate(models)}, [self.example], self.device,
                               reference="0", images=images)["models"]
        ms = [measured[str(k)]["latency_ms"] for k in range(len(models))]
        fit = self.table.calibrate(traced, ms)
        self.table.fits[self.context] = fit
        self.table.save()
        self._predicted.clear()
        rows = [{"sum_ms": t["sum_ms"], "ops": t["ops"], "measured_ms": m, "predicted_ms": corrected(t, fit)}
                for t, m in zip(traced, ms)]
        return {**fit, "context": self.context, "detectors": rows}


#: Random decoders beside the control that a search's first calibration measures end to end, and
#: the images each is timed on.
CALIBRATION_DECODERS = 3
CALIBRATION_IMAGES = 30
#: More random decoders only traced at a search's start: nearly every op shape of a space is in
#: the table before trials run (measured on nas-fcos: after the control and two decoders, each
#: new decoder adds 0-2 shapes), so few ops are timed later beside a training trial.
WARM_DECODERS = 12


def random_genotypes(space, count: int, seed: int = 0) -> list:
    """`count` uniform draws of a discrete space; none for a space random search cannot sample
    (SP-NAS grows a lineage): the control alone then calibrates."""
    from .strategies.random import RandomStrategy

    try:
        return RandomStrategy(space, seed=seed).ask(count)
    except (AttributeError, NotImplementedError, TypeError):
        return []


class LatencyBudget:
    """A search's `--latency-target` as a limit in ms on its candidates' predicted latency: a
    multiple of the control's prediction ('1.0x') or milliseconds ('80ms'). The first search on
    a machine and shape calibrates the table (the control and a few random decoders timed end
    to end, ~30 images each)."""

    def __init__(self, target: str, candidates: CandidateLatency, control, space, seed: int = 0):
        from .latency import parse_latency_target

        value, unit = parse_latency_target(target)
        self.target, self.candidates = target, candidates
        drawn = random_genotypes(space, CALIBRATION_DECODERS + WARM_DECODERS, seed)
        if candidates.context not in candidates.table.fits:
            candidates.calibrate([control, *drawn[:CALIBRATION_DECODERS]], images=CALIBRATION_IMAGES)
        for genotype in drawn:  # op shapes met now, before trials run beside the timing
            candidates.predict(genotype)
        self.control_ms = candidates.predict(control)
        self.limit_ms = value * self.control_ms if unit == "x" else value
        self.skipped_in_a_row, self.exhausted = 0, False  # kept by search._within_target
        candidates.table.save()

    def predict(self, genotype) -> float:
        return self.candidates.predict(genotype)

    def admits(self, genotype) -> bool:
        return self.predict(genotype) <= self.limit_ms

    def reason(self, genotype) -> str:
        return (f"over the latency target {self.target}: predicted {self.predict(genotype):.1f} ms/image "
                f"> {self.limit_ms:.1f} ms")


def profile(checkpoint, folder, control, space, *, decoders: int = CALIBRATION_DECODERS, images: int = 30,
            seed: int = 0, device="cpu") -> dict:
    """Builds (or extends) this machine's table for the promoted shape of `checkpoint`'s baseline
    and fits its correction on the control and `decoders` random decoders of `space`, each timed
    end to end on `images` images (interleaved). What `nascli profile` prints."""
    cand = CandidateLatency.for_checkpoint(checkpoint, folder, device)
    genotypes = [control, *random_genotypes(space, decoders, seed)]
    fit = cand.calibrate(genotypes, images=images)
    return {"table": str(cand.table.path), "environment": cand.table.env, "keys": len(cand.table.ops),
            "input_size": list(cand.size), "fit": fit,
            "rows": [{"genotype": g.to_json(), "control": k == 0, **row}
                     for k, (g, row) in enumerate(zip(genotypes, fit["detectors"]))]}
