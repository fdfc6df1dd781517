"""Evaluation with pycocotools (AP, AP50, AP75, APs/m/l), cost (params, FLOPs, latency), prediction."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from .data.coco import CocoDetection, Transform, to_chw, write_json
from .errors import CheckpointError, DataError, SpecError
from .latency import MIN_IMAGES, check_runtime, measure
from .runtime import load_checkpoint, resolve_device
from .train import build_detector, collate, padded_size

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def load_detector(checkpoint, device="cpu", exit_after: int | None = None, stand_in_ok: bool = False):
    """(model in eval mode, checkpoint dict) from a nascli checkpoint; `exit_after` = K stops a
    stacked NAS-FPN after K pyramids (anytime detection); `stand_in_ok`: a ledger's stand-in will
    do (timing only: its weights are not trained)."""
    ckpt = load_checkpoint(checkpoint, stand_in_ok=stand_in_ok)
    model = build_detector(ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise CheckpointError(f"{checkpoint}: field 'model' does not fit the detector described by "
                              f"'model_args' (written by another nascli version?)") from None
    if exit_after is not None:
        stages = getattr(model.decoder, "stages", 1)
        if not 1 <= exit_after <= stages:
            raise SpecError(f"--exit-after {exit_after}: {checkpoint} has {stages} stacked pyramid(s); "
                            f"choose 1..{stages} (only NAS-FPN decoders stack)")
        model.decoder.exit_after = exit_after
    return model.to(device).eval(), ckpt


def eval_transform(ckpt) -> Transform:
    cfg = ckpt["config"]
    return Transform(cfg["min_size"], cfg["max_size"])


def detect(model, images: torch.Tensor, targets, device) -> list[dict]:
    """Detections per image in the original image's pixel coordinates."""
    outputs = model(images.to(device))
    results = model.postprocess(outputs, [t["size"] for t in targets])
    for r, t in zip(results, targets):
        r["boxes"] = r["boxes"] / np.float32(t["scale"])
    return results


def coco_results(results, targets, class_ids) -> list[dict]:
    """Detections as COCO results json entries (xywh, original category ids)."""
    out = []
    for r, t in zip(results, targets):
        for (x0, y0, x1, y1), s, lab in zip(r["boxes"], r["scores"], r["labels"]):
            out.append({"image_id": int(t["image_id"]), "category_id": int(class_ids[lab]),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        "score": float(s)})
    return out


def coco_ap(coco_gt, detections: list[dict], image_ids=None) -> dict:
    """COCOeval bbox metrics; with no detections at all every AP is 0 (pycocotools cannot load [])."""
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {m: 0.0 for m in METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {m: float(v) for m, v in zip(METRICS, ev.stats[:6])}


def count_flops(model, height: int, width: int, device) -> int:
    """FLOPs of one forward pass at the given input size (torch's FlopCounterMode: 2 per MAC; a
    dilated conv counts its whole kernel, `nominal_taps`)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .spaces.ops import nominal_taps

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), nominal_taps():
        model(torch.zeros(1, 3, height, width, device=device))
    return int(counter.get_total_flops())


def stages_of(checkpoint) -> int:
    """How many stacked pyramids a checkpoint's decoder has (1 unless NAS-FPN)."""
    model, _ = load_detector(checkpoint)
    return getattr(model.decoder, "stages", 1)


def evaluate(checkpoint, data, *, image_dir=None, device="auto", batch_size: int = 4,
             latency_images: int = MIN_IMAGES, on_progress=None, exit_after: int | None = None,
             runtime: str = "torch", detections_out=None) -> dict:
    """Runs the detector over a COCO json and returns AP metrics, params, FLOPs and latency/image
    (median of `latency_images` single images after warm-up, with quartiles and the thread count:
    latency.measure; with `exit_after`, of the detector stopped after that many stacked pyramids).
    `runtime` onnxruntime: the latency is the network exported to ONNX (deploy.py) under ONNX
    Runtime plus the same post-processing; AP stays torch's (the export is checked equal to it).
    `detections_out`: where to keep the detections (COCO results json), so that the image bootstrap
    of a test verdict never needs the model again."""
    check_runtime(runtime)
    device = resolve_device(device)
    model, ckpt = load_detector(checkpoint, device, exit_after)
    dataset = CocoDetection(data, image_dir, eval_transform(ckpt))
    dataset.audit().raise_if_unusable()
    names = ckpt["classes"]["names"]
    if [dataset.coco.cats[c]["name"] for c in dataset.class_ids] != names:
        raise DataError(f"{data}: field 'categories' {dataset.class_names} does not match the "
                        f"checkpoint's classes {names}")
    detections = dataset_detections(model, dataset, device, batch_size, on_progress)
    if detections_out is not None:
        write_json(detections, detections_out)
    runner = image_runner(model, device) if runtime == "torch" else onnx_runner(checkpoint, model, dataset)
    latency = {**measure(runner, single_images(dataset, latency_images), device, images=latency_images),
               "runtime": runtime}
    h, w = dataset[0][0].shape[1:]
    with torch.no_grad():
        flops = count_flops(model, h, w, device)
    metrics = coco_ap(dataset.coco, detections)
    return {**metrics, "images": len(dataset), "detections": len(detections),
            "params": sum(p.numel() for p in model.parameters()), "flops": flops,
            "flops_input": [int(h), int(w)], **latency, "device": str(device),
            "checkpoint": str(checkpoint), "data": str(data), "exit_after": exit_after}


def dataset_detections(model, dataset, device, batch_size: int = 4, on_progress=None) -> list[dict]:
    """The model's detections on every image of `dataset`, as COCO results entries."""
    loader = torch.utils.data.DataLoader(dataset, batch_size, collate_fn=collate)
    detections = []
    model.eval()
    with torch.inference_mode():
        for i, (images, targets) in enumerate(loader):
            detections += coco_results(detect(model, images, targets, device), targets, dataset.class_ids)
            if on_progress:
                on_progress({"step": i + 1, "steps": len(loader)})
    return detections


def single_images(dataset, count: int) -> list:
    """Up to `count` of the dataset's images as batches of one (what latency is timed on)."""
    return [collate([dataset[i]]) for i in range(min(count, len(dataset)))]


def onnx_runner(checkpoint, model, dataset):
    """`run((images, targets))` under ONNX Runtime: the network exported (to a temporary file) at
    the largest padded image of `dataset` (from the json's sizes), then the detector's post-processing."""
    import tempfile

    from .deploy import OnnxDetector, export_model

    sizes = [padded_size(dataset.transform, im["width"], im["height"]) for im in dataset.coco.imgs.values()]
    size = [max(h for h, _ in sizes), max(w for _, w in sizes)]
    with tempfile.TemporaryDirectory() as folder:  # the model in hand (a ledger's stand-in times as well)
        path = export_model(model.cpu(), Path(folder) / "detector.onnx", size, {"checkpoint": str(checkpoint)})["onnx"]
        detector = OnnxDetector(path, model.postprocess)
    return lambda batch: detector(batch[0], [t["size"] for t in batch[1]])


def image_runner(model, device):
    """`run((images, targets))`: one image through the network and its post-processing."""
    return lambda batch: detect(model, batch[0], batch[1], device)


def predict(checkpoint, images, out_dir, *, device="auto", score_thresh: float = 0.3,
            exit_after: int | None = None) -> dict:
    """Writes `detections.json` (COCO results, image_id = position in `images`) and one PNG per
    image with its boxes drawn; returns the paths."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from .data.photos import read_photo

    device = resolve_device(device)
    model, ckpt = load_detector(checkpoint, device, exit_after)
    transform, names = eval_transform(ckpt), ckpt["classes"]["names"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, pngs = [], []
    with torch.no_grad():
        for image_id, path in enumerate(images, start=1):
            path = Path(path)
            original = read_photo(path)  # a bare photo: upright, as it is displayed
            image, _, _, scale = transform(original, np.zeros((0, 4), np.float32),
                                           np.zeros(0, np.int64), None)
            target = {"image_id": image_id, "scale": scale, "size": (image.height, image.width)}
            batch, _ = collate([(to_chw(image), target)])
            det = detect(model, batch, [target], device)[0]
            entries = coco_results([det], [target], ckpt["classes"]["ids"])
            results += [{**e, "file_name": path.name} for e in entries]
            keep = det["scores"] >= score_thresh
            picture = torch.from_numpy(np.asarray(original).copy()).permute(2, 0, 1)
            if keep.any():
                picture = draw_bounding_boxes(
                    picture, torch.from_numpy(det["boxes"][keep]),
                    [f"{names[lab]} {s:.2f}" for lab, s in zip(det["labels"][keep], det["scores"][keep])],
                    colors="red", width=2)
            png = out_dir / f"{path.stem}.png"
            Image.fromarray(picture.permute(1, 2, 0).numpy()).save(png)
            pngs.append(str(png))
    json_path = write_json(results, out_dir / "detections.json")
    return {"detections": str(json_path), "images": pngs, "count": len(results)}


def fast_coco_ap(coco_gt, detections: list[dict]) -> dict:
    """The six COCOeval AP numbers from the numba kernel (same values as `coco_ap`, many times
    faster): ground truth from a pycocotools COCO object, detections as COCO results entries."""
    from .kernels import coco_precision, summarize

    return summarize(coco_precision(*kernel_arrays(coco_gt, detections)))


def kernel_arrays(coco_gt, detections: list[dict]) -> tuple:
    """Ground truth and detections as the AP kernels take them (categories and images indexed in
    sorted id order), with the two counts last."""
    img_ids, cat_ids = sorted(coco_gt.getImgIds()), sorted(coco_gt.getCatIds())
    img_index = {i: k for k, i in enumerate(img_ids)}
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    anns = [a for a in coco_gt.dataset["annotations"] if a["category_id"] in cat_index]
    dets = [d for d in detections if d["category_id"] in cat_index]
    unknown = [d["image_id"] for d in dets if d["image_id"] not in img_index]
    if unknown:
        raise DataError(f"detections: field 'image_id' {unknown[0]} is not an image of the ground truth")
    return (np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
            np.array([cat_index[a["category_id"]] for a in anns], np.int64),
            np.array([img_index[a["image_id"]] for a in anns], np.int64),
            np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], np.float64),
            np.array([bool(a.get("iscrowd", 0)) for a in anns], np.bool_),
            np.array([d["bbox"] for d in dets], np.float64).reshape(-1, 4),
            np.array([d["score"] for d in dets], np.float64),
            np.array([cat_index[d["category_id"]] for d in dets], np.int64),
            np.array([img_index[d["image_id"]] for d in dets], np.int64),
            len(cat_ids), len(img_ids))


#: Resamples of the test images in the paired image bootstrap.
BOOTSTRAP_DRAWS = 2000


def resampled_aps(coco_gt, detections: list[dict], draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> np.ndarray:
    """AP points of one set of detections on the test images as they are (first) and on `draws`
    resamples of them with replacement; the same resamples for every call with that `seed` and
    ground truth, so arms and seeds stay paired."""
    from .kernels import resampled_ap

    n_imgs = len(coco_gt.getImgIds())
    rows = np.vstack([np.arange(n_imgs)[None], np.random.default_rng(seed).integers(0, n_imgs, (draws, n_imgs))])
    return resampled_ap(*kernel_arrays(coco_gt, detections), rows) * 100


def image_bootstrap(arm: list[np.ndarray], control: list[np.ndarray]) -> dict:
    """How much the test AP difference would move on other images from the same distribution:
    per resample (`resampled_aps` of each seed, paired), the difference of seed-mean AP (arm -
    control). Returns the observed difference, the 95 % percentile interval and the draws."""
    diff = np.mean(arm, axis=0) - np.mean(control, axis=0)
    low, high = np.percentile(diff[1:], [2.5, 97.5])
    return {"difference": float(diff[0]), "low": float(low), "high": float(high), "draws": len(diff) - 1}
