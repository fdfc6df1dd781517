"""What folding BatchNorm (nascli/models/inference.py) and channels-last memory buy at inference,
for the control and each promoted architecture of a run, timed in one process, interleaved.

`python -m benchmarks.bench_inference --run RUN --images 50 --out benchmarks/inference.json`
(`make bench-inference`: the BCCD latency promotion). For each architecture's first finished seed
(a ledger's stand-in times as well: latency does not depend on the weights' values) three arms on
the same test images: as evaluated (torch, inference mode), BatchNorm folded, and folded in
channels-last memory format; each arm's median ms, its ratio to the same arm of the control, and
the largest difference of its raw outputs from the unfolded model's (float order only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARMS = ("as evaluated", "bn folded", "bn folded, channels-last")


def arms(model) -> dict:
    """The three variants of one detector (eval mode)."""
    import torch

    from nascli.models.inference import fold_batchnorm

    folded, count = fold_batchnorm(model)
    last = fold_batchnorm(model)[0].to(memory_format=torch.channels_last)
    return {"as evaluated": model, "bn folded": folded, "bn folded, channels-last": last}, count


def largest_difference(reference, other, batches) -> float:
    """Largest absolute difference of the raw network outputs over `batches`."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        for images, _ in batches:
            want, got = reference(images), other(images)
            for key, value in want.items():
                if isinstance(value, torch.Tensor):
                    worst = max(worst, float((got[key] - value).abs().max()))
    return worst


def run(run_dir: Path, images: int) -> dict:
    import torch

    from nascli.data.coco import CocoDetection
    from nascli.evaluate import eval_transform, image_runner, load_detector, single_images
    from nascli.latency import interleaved
    from nascli.report import compare, promoted_checkpoint

    done = [a for a in compare([run_dir])["architectures"] if a["status"] == "done"]
    models = {a["arch"]: load_detector(promoted_checkpoint(run_dir, a["arch"]), "cpu", stand_in_ok=True)
              for a in done}
    control, ckpt = models["baseline"]
    data = next(a["data"] for a in done if a["arch"] == "baseline") or ckpt["config"]["val"]
    batches = single_images(CocoDetection(data, None, eval_transform(ckpt)), images)
    runners, folded_counts, differences = {}, {}, {}
    for arch, (model, _) in models.items():
        variants, folded_counts[arch] = arms(model)
        for name, variant in variants.items():
            runners[f"{arch} | {name}"] = image_runner(variant, "cpu")
            if name != ARMS[0]:
                differences[f"{arch} | {name}"] = largest_difference(model, variant, batches[:5])
    timing = interleaved(runners, batches, torch.device("cpu"), reference=f"baseline | {ARMS[0]}", images=images)
    out = {"run": str(run_dir), "images": images, "threads": timing["threads"], "processor": timing["processor"],
           "torch": timing["torch"], "architectures": {}}
    for arch in models:
        per_arm = {}
        for name in ARMS:
            ms = timing["models"][f"{arch} | {name}"]["latency_ms"]
            per_arm[name] = {"latency_ms": ms, "ratio_to_control": ms / timing["models"][f"baseline | {name}"]["latency_ms"],
                             "ratio_to_as_evaluated": ms / timing["models"][f"{arch} | {ARMS[0]}"]["latency_ms"],
                             "max_output_difference": differences.get(f"{arch} | {name}", 0.0)}
        out["architectures"][arch] = {"batchnorms_folded": folded_counts[arch], "arms": per_arm}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/inference.json")
    args = parser.parse_args()
    result = run(Path(args.run), args.images)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{'architecture':<16}" + "".join(f"{name:>30}" for name in ARMS))
    for arch, a in result["architectures"].items():
        cells = [f"{v['latency_ms']:.1f} ms ({v['ratio_to_control']:.2f}x)" for v in a["arms"].values()]
        print(f"{arch:<16}" + "".join(f"{c:>30}" for c in cells) + f"   ({a['batchnorms_folded']} BN folded)")
    print(f"{result['threads']} threads; wrote {args.out}")


if __name__ == "__main__":
    main()
