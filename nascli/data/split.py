"""Seeded meta-train / meta-val split of a COCO json (NAS-FCOS: 4000 / 1715 of VOC train)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError, SpecError
from .coco import read_json, resolve_image_dir, validate_coco, write_json


def _subset(data: dict, image_ids: set) -> dict:
    return {**data,
            "images": [im for im in data["images"] if im["id"] in image_ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in image_ids]}


def split_coco(ann_path, out_train, out_val, val: float = 0.3, seed: int = 0,
               image_dir=None) -> dict:
    """Splits images at random; `val` < 1 is a fraction, >= 1 a count of meta-val images.

    Both outputs record `image_dir` (absolute) so they resolve images wherever they are written.
    """
    data = validate_coco(read_json(ann_path), ann_path)
    ids = sorted(im["id"] for im in data["images"])
    n_val = int(round(val * len(ids))) if val < 1 else int(val)
    if val <= 0 or not 1 <= n_val < len(ids):
        raise SpecError(f"--val {val}: leaves an empty split of {len(ids)} images in {ann_path}")
    perm = np.random.default_rng(seed).permutation(len(ids))
    val_ids = {ids[i] for i in perm[:n_val]}
    train_ids = set(ids) - val_ids
    recorded = data.get("info") if isinstance(data.get("info"), dict) else {}
    info = {**recorded, "image_dir": str(resolve_image_dir(ann_path, image_dir, data).resolve())}
    for ids_, out in ((train_ids, out_train), (val_ids, out_val)):
        part = _subset(data, ids_)
        if not part["annotations"]:
            raise DataError(f"{ann_path}: split written to {out} would hold no annotations")
        write_json({**part, "info": info}, out)
    return {"train": str(out_train), "val": str(out_val),
            "train_images": len(train_ids), "val_images": len(val_ids), "seed": seed}


def shared_images(files, dataset) -> list[str]:
    """The images of `dataset` (a CocoDetection) whose resolved files are among `files`."""
    seen = set(files)
    return [f for f in dataset.image_files() if f in seen]
