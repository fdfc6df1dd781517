"""Is the per-op latency table worth searching under? (`make bench-latency`; run it alone)

For each decoder space, the control and N random decoders are built as `retrain` promotes them (on
BCCD's promoted shape by default: ResNet-18, width 128, a 2-conv head tower, 3 classes, 256x352
images) and each is
- *predicted* by the machine's table (nascli/latency_table.py: the sum of its forward's aten ops,
  each timed once where it first occurred, plus the per-op and fixed correction fitted on a
  separate calibration set of the control and K other random decoders), and
- *measured* end to end: batch 1, forward + post-processing, median of `--images` images after
  warm-up, every detector interleaved with the others in one process - twice, so the
  measurement's own repeatability (Kendall tau and median difference between the two runs) is
  reported beside the prediction's: no predictor can agree with one measurement better than a
  second measurement does.
Reported per space: tau (with a 90 % bootstrap interval) and median relative error of predicted
against measured (the mean of both runs) - in ms, and of each decoder's ratio to the control, which
the machine's drift between calibration and measurement (10-30 % within minutes here) does not
move -, the repeatability ceiling, and the latency ratios to the control, so the spread the
ranking has to resolve is visible. Writes benchmarks/latency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def onnx_ratios(cand, models, images: int) -> dict:
    """Every detector exported to ONNX and timed under ONNX Runtime (network + the same
    post-processing), interleaved: ms and ratio to the first (the control)."""
    import tempfile

    from nascli.deploy import OnnxDetector, export_model
    from nascli.latency import interleaved

    runners = {}
    with tempfile.TemporaryDirectory() as folder:
        for k, m in enumerate(models):
            path = export_model(m, Path(folder) / f"{k}.onnx", cand.size)["onnx"]
            runners[str(k)] = (lambda det: lambda x: det(x, [cand.size]))(OnnxDetector(path, m.postprocess))
        timed = interleaved(runners, [cand.example], "cpu", reference="0", images=images, seed=3)["models"]
    ms = [timed[str(k)]["latency_ms"] for k in range(len(models))]
    return {"ms": ms, "ratios": [v / ms[0] for v in ms[1:]]}


def main():
    import torch

    from nascli.config import ProxySpec, load_spec, resolve_proxy
    from nascli.latency import interleaved, processor
    from nascli.latency_table import CandidateLatency, LatencyTable
    from nascli.methods import for_space
    from nascli.methods.decoder import fcos_control
    from nascli.spaces import fpn_fcos
    from nascli.report import bootstrap_tau, kendall_tau
    from nascli.spaces import space_for
    from nascli.strategies.random import RandomStrategy

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default="nas-fcos-demo,nas-fcos,nas-fpn,auto-fpn",
                   help="proxy specs whose spaces to sample (comma-separated)")
    p.add_argument("--genotypes", type=int, default=20, help="held-out random decoders per space")
    p.add_argument("--calibration", type=int, default=4, help="random decoders beside the control the fit sees")
    p.add_argument("--images", type=int, default=30, help="timed images per detector and measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--num-convs", type=int, default=2)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--size", default="256x352", help="HxW of the promoted input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--onnx-decoders", type=int, default=8,
                   help="held-out decoders also exported and timed under ONNX Runtime with the control "
                        "(an export takes ~10 s; 0: none; needs nascli[deploy])")
    p.add_argument("--out", type=Path, default=Path("benchmarks/latency.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.split("x"))
    args = {"num_classes": a.classes, "backbone": a.backbone, "frozen_bn": False, "width": a.width,
            "num_convs": a.num_convs, "head_width": None}
    started = time.perf_counter()
    result = {"threads": a.threads, "processor": processor("cpu"), "torch": str(torch.__version__),
              "model_args": args, "size": list(size), "images": a.images, "spaces": {}}
    if a.out.is_file():  # rows of other spaces measured on the same terms are kept (one space a run)
        before = json.loads(a.out.read_text())
        if all(before.get(k) == result[k] for k in ("threads", "processor", "torch", "model_args", "size", "images")):
            result["spaces"] = before["spaces"]
    for name in a.spaces.split(","):
        spec = load_spec(ProxySpec, resolve_proxy(name))
        space = space_for(spec)
        entry = for_space(spec.space)
        # the FCOS family's control is FPN + FCOS head at the baseline's tower depth (no cache here to read it from)
        control = (fpn_fcos.Genotype(num_convs=a.num_convs) if entry.control is fcos_control
                   else entry.control(spec, None))
        drawn = RandomStrategy(space, seed=a.seed).ask(a.calibration + a.genotypes)
        held_out = drawn[a.calibration:]
        table = LatencyTable({"device": "cpu", "processor": result["processor"], "threads": a.threads,
                              "torch": result["torch"], "runtime": "torch"})  # fresh: nothing from earlier runs
        cand = CandidateLatency(table, args, size)
        table.save = lambda path=None: None  # the bench's table stays in memory
        fit = cand.calibrate([control, *drawn[:a.calibration]], images=a.images)
        predicted = [cand.predict(g) for g in [control, *held_out]]
        models = [cand.detector(g) for g in [control, *held_out]]
        runners = {str(k): cand.runner(m) for k, m in enumerate(models)}
        runs = [interleaved(runners, [cand.example], "cpu", reference="0", images=a.images, seed=s)["models"]
                for s in (1, 2)]
        first, second = ([r[str(k)]["latency_ms"] for k in range(len(models))] for r in runs)
        measured = [(x + y) / 2 for x, y in zip(first, second)]
        err = [abs(pr - m) / m for pr, m in zip(predicted, measured)]
        onnx = onnx_ratios(cand, models[:1 + a.onnx_decoders], a.images) if a.onnx_decoders else None
        # drift-free: each detector's ratio to the control, predicted against measured
        ratio_err = [abs(pr / predicted[0] - m / measured[0]) / (m / measured[0])
                     for pr, m in zip(predicted[1:], measured[1:])]
        row = {"space": spec.space, "proxy": name, "fit": fit, "keys": len(table.ops),
               "median_ratio_error": float(np.median(ratio_err)),
               "kendall_tau": kendall_tau(predicted, measured), "tau_interval": bootstrap_tau(predicted, measured),
               "median_error": float(np.median(err)), "max_error": float(np.max(err)),
               "repeat_tau": kendall_tau(first, second),
               "repeat_median_difference": float(np.median([abs(x - y) / ((x + y) / 2) for x, y in zip(first, second)])),
               "control_ms": {"predicted": predicted[0], "measured": measured[0]},
               "ratio_to_control": {"min": float(min(measured[1:]) / measured[0]),
                                    "median": float(np.median(measured[1:]) / measured[0]),
                                    "max": float(max(measured[1:]) / measured[0])},
               "detectors": [{"genotype": g.to_json(), "predicted_ms": pr, "measured_ms": [x, y],
                              **({"onnxruntime_ms": onnx["ms"][k]} if onnx and k < len(onnx["ms"]) else {})}
                             for k, (g, pr, x, y) in enumerate(zip([control, *held_out], predicted, first, second))]}
        if onnx:  # does the searched ops' penalty hold under ONNX Runtime too?
            torch_ratios = [m / measured[0] for m in measured[1:len(onnx["ms"])]]
            row["onnxruntime"] = {"control_ms": onnx["ms"][0], "ratio_to_control": {
                "min": min(onnx["ratios"]), "median": float(np.median(onnx["ratios"])), "max": max(onnx["ratios"])},
                "decoders": len(onnx["ratios"]), "kendall_tau_vs_torch": kendall_tau(onnx["ms"], measured[:len(onnx["ms"])]),
                "median_ratio_torch_over_onnxruntime": float(np.median(
                    [t / o for t, o in zip(torch_ratios, onnx["ratios"])]))}
        result["spaces"][name] = row
        print(f"{name:<14} tau {row['kendall_tau']:.2f} [{row['tau_interval'][0]:.2f}, {row['tau_interval'][1]:.2f}] "
              f"median error {100 * row['median_error']:.1f} % (max {100 * row['max_error']:.1f}, of the ratio to the "
              f"control {100 * row['median_ratio_error']:.1f}); "
              f"repeat tau {row['repeat_tau']:.2f}, repeat difference {100 * row['repeat_median_difference']:.1f} %; "
              f"control {measured[0]:.1f} ms, decoders {row['ratio_to_control']['min']:.2f}-"
              f"{row['ratio_to_control']['max']:.2f}x" + (
                  f"; under ONNX Runtime control {row['onnxruntime']['control_ms']:.1f} ms, decoders "
                  f"{row['onnxruntime']['ratio_to_control']['min']:.2f}-{row['onnxruntime']['ratio_to_control']['max']:.2f}x"
                  if onnx else ""), flush=True)
        row["minutes"] = (time.perf_counter() - started) / 60
        started = time.perf_counter()
        a.out.write_text(json.dumps(result, indent=2))  # after every space: a kill keeps what is done
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
