"""COCO box AP: nascli's numba kernel vs pycocotools vs faster-coco-eval, in one run.

Each contender goes from the same ground-truth json and the same results list to the six AP
numbers (loading the results, matching, accumulating, summarising), and the values are checked
to agree before any time is reported. `python -m benchmarks.bench_ap`.
"""

import contextlib
import copy
import io
import time

import numpy as np

IMAGES, DETS_PER_IMAGE, CLASSES = 500, 100, 80


def coco_like(images=IMAGES, dets_per_image=DETS_PER_IMAGE, classes=CLASSES, seed=0):
    """A COCO-sized problem: ~7 objects per image over 80 classes, 100 detections per image
    (jittered true positives first, then false positives), COCO-like size spread."""
    rng = np.random.default_rng(seed)
    imgs = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(images)]
    cats = [{"id": c + 1, "name": f"class{c}"} for c in range(classes)]
    anns, dets = [], []
    for im in imgs:
        boxes = []
        for _ in range(rng.integers(1, 14)):
            w, h = np.exp(rng.uniform(np.log(8), np.log(400), 2))
            x, y = rng.uniform(0, 640 - min(w, 600)), rng.uniform(0, 480 - min(h, 440))
            c = int(rng.integers(1, classes + 1))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            boxes.append((x, y, w, h, c))
        for k in range(dets_per_image):
            if k < 3 * len(boxes):
                x, y, w, h, c = boxes[k % len(boxes)]
                box = [x + rng.normal(0, 0.1 * w), y + rng.normal(0, 0.1 * h), w * rng.uniform(0.8, 1.2),
                       h * rng.uniform(0.8, 1.2)]
            else:
                w, h = np.exp(rng.uniform(np.log(8), np.log(300), 2))
                box, c = [rng.uniform(0, 600), rng.uniform(0, 440), w, h], int(rng.integers(1, classes + 1))
            dets.append({"image_id": im["id"], "category_id": c, "bbox": [float(v) for v in box],
                         "score": float(rng.random())})
    return {"images": imgs, "categories": cats, "annotations": anns}, dets


def pycocotools_gt(gt_dict):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
    return gt


def run_pycocotools(gt, dets):
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


def run_faster_coco_eval(gt, dets):
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[:6]


def run_nascli(gt, dets):
    from nascli.evaluate import METRICS, fast_coco_ap

    r = fast_coco_ap(gt, dets)
    return np.array([r[m] for m in METRICS])


def _timed(fn, gt, dets, repeats):
    """Median seconds of fn(gt, fresh copy of dets): loadRes edits the result dicts in place,
    so each call gets its own copy, made outside the timing."""
    times = []
    for _ in range(repeats):
        fresh = copy.deepcopy(dets)
        start = time.perf_counter()
        fn(gt, fresh)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def rows():
    """[(contender, seconds, AP)] and the problem size. Every contender gets its ground truth
    already indexed (as `nascli eval` has it) and times results -> six AP numbers."""
    gt_dict, dets = coco_like()
    gts = {"pycocotools": pycocotools_gt(gt_dict)}
    try:
        from faster_coco_eval import COCO as FasterCOCO

        gts["faster"] = FasterCOCO(copy.deepcopy(gt_dict))
    except ImportError:
        gts["faster"] = None
    run_nascli(gts["pycocotools"], dets[:500])  # compile the numba kernels before timing
    ref = run_pycocotools(gts["pycocotools"], copy.deepcopy(dets))
    out = []
    for name, fn, gt, repeats in (("pycocotools (COCOeval)", run_pycocotools, gts["pycocotools"], 3),
                                  ("faster-coco-eval", run_faster_coco_eval, gts["faster"], 5),
                                  ("nascli.kernels.ap (numba)", run_nascli, gts["pycocotools"], 7)):
        if gt is None:
            out.append((name + " (not installed)", float("nan"), float("nan")))
            continue
        stats = fn(gt, copy.deepcopy(dets))
        if not np.allclose(stats, ref, atol=1e-6 if name.startswith("faster") else 1e-12):
            raise AssertionError(f"{name} disagrees with pycocotools: {stats} vs {ref}")
        out.append((name, _timed(fn, gt, dets, repeats), float(stats[0])))
    return out, {"images": IMAGES, "detections": len(dets), "ground_truth": len(gt_dict["annotations"]),
                 "classes": CLASSES}


def main():
    import os

    from rich.console import Console
    from rich.table import Table

    started = time.perf_counter()
    results, size = rows()
    ref = results[0][1]
    table = Table(title=f"COCO box AP on {size['images']} images x {DETS_PER_IMAGE} detections "
                        f"({size['ground_truth']} boxes, {size['classes']} classes; {os.cpu_count()} CPU cores)")
    for col in ("evaluator", "seconds", "speed-up vs pycocotools", "AP"):
        table.add_column(col, justify="left" if col == "evaluator" else "right")
    for name, seconds, ap in results:
        table.add_row(name, f"{seconds:.3f}", f"{ref / seconds:.1f}x", f"{ap:.4f}")
    Console(width=120).print(table)
    print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
