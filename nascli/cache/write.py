"""Building a cache: the frozen backbone's features (or the image crops) and the detectors'
targets of every crop, written to `<key>.h5.partial` and renamed when complete; an interrupted
build resumes from the last flushed sample (`done` attribute of each split)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, DataError, SpecError
from .crops import crop_sample, crop_transform, to_chw_array
from .format import (FEATURE_LEVELS, FORMAT, PYRAMID_STRIDES, cache_key, checksums, default_cache_dir, pyramid_sizes,
                     sha256_file, tensors_digest)
from .read import describe


FLUSH_EVERY = 16  # samples between flushes: the most an interrupted build recomputes


def build_cache(data, val, *, out_dir=None, checkpoint=None, backbone: str | None = None, weights=None,
                crop: int = 256, crops_per_image: int = 1, min_size: int | None = None,
                levels=FEATURE_LEVELS, image_dir=None, val_image_dir=None, batch_size: int = 16,
                device="auto", seed: int = 0, on_progress=None, force: bool = False) -> dict:
    """Builds (or finds) the cache for this request and returns {path, key, reused, ...}.

    The backbone is the trained baseline's (`checkpoint`) or a torchvision one (`backbone`, with
    `weights`: a file or a torchvision weights name); it runs frozen in eval mode. `levels` is a subset of c2..c5, or
    ("images",) to store the preprocessed uint8 crops instead (backbone searches). A checkpoint
    that diverged, stopped early or scored ~0 AP (train.learned_nothing) is refused unless `force`.
    """
    from ..train import learned_nothing

    from ..data.coco import CocoDetection
    from ..models.backbones import build_backbone
    from ..runtime import load_checkpoint, resolve_device, sub_state

    levels = tuple(levels)
    if levels != ("images",) and (not levels or any(lv not in FEATURE_LEVELS for lv in levels)):
        raise SpecError(f"--levels {','.join(levels)}: choose from {', '.join(FEATURE_LEVELS)} or 'images'")
    if crop % 32:
        raise SpecError(f"--crop {crop}: must be a multiple of 32 (the C5 stride)")
    if (checkpoint is None) == (backbone is None):
        raise SpecError("cache-features: give exactly one of --checkpoint or --backbone")
    device = resolve_device(device)
    min_size = min_size or crop
    untrained = None
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        untrained = learned_nothing(ckpt)
        if untrained and not force:
            raise CheckpointError(f"{checkpoint}: {untrained}; --force caches its features anyway")
        backbone = ckpt["model_args"]["backbone"]
        net = build_backbone(backbone, frozen_bn=ckpt["model_args"].get("frozen_bn", False))
        net.load_state_dict(sub_state(ckpt["model"], "backbone."))
    else:
        if weights is None or str(weights) == "none":
            raise SpecError("--backbone without --weights would cache random features; "
                            "give --weights FILE|default|NAME or --checkpoint CKPT")
        net = build_backbone(backbone, weights)
    weights_digest = tensors_digest(net.state_dict())
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    splits = {"train": (data, image_dir), "val": (val, val_image_dir)}
    key_fields = {"format": FORMAT, "backbone": backbone, "weights": weights_digest, "crop": crop,
                  "crops_per_image": crops_per_image, "min_size": min_size, "seed": seed,
                  "levels": list(levels), "datasets": {}}
    datasets = {}
    for split, (path, idir) in splits.items():
        ds = CocoDetection(path, idir, crop_transform(crop, min_size), seed=seed)
        ds.audit().raise_if_unusable()
        datasets[split] = ds
        key_fields["datasets"][split] = {"sha256": sha256_file(path), "images": len(ds),
                                         "image_ids": hashlib.sha256(str(ds.image_ids).encode()).hexdigest()}
    if datasets["train"].class_names != datasets["val"].class_names:
        raise SpecError(f"{val}: field 'categories' differs from {data}'s")
    if checkpoint is not None:
        _refuse_leak(checkpoint, ckpt, val, datasets["val"])
    key = cache_key(key_fields)
    out_dir = default_cache_dir(out_dir)
    final = out_dir / f"{key}.h5"
    if final.is_file():
        return {"path": str(final), "key": key, "reused": True, **describe(final)}
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    started = time.perf_counter()
    # Where the request came from (not part of the key): what `retrain` defaults to.
    sources = {"checkpoint": str(checkpoint) if checkpoint else None, "data": str(data), "val": str(val),
               "model_args": ckpt["model_args"] if checkpoint is not None else None,
               "image_dir": str(image_dir) if image_dir else None,
               "val_image_dir": str(val_image_dir) if val_image_dir else None,
               "forced": untrained}  # cached over train.learned_nothing's objection: search need not ask again
    computed = _write(partial, key, key_fields, sources, datasets, net, levels, crop, crops_per_image,
                      batch_size, device, on_progress)
    _finalise(partial)
    os.replace(partial, final)
    return {"path": str(final), "key": key, "reused": False, "computed_samples": computed,
            "seconds": time.perf_counter() - started, **describe(final)}


def _refuse_leak(checkpoint, ckpt: dict, val, val_dataset) -> None:
    """A backbone that trained on meta-val images would make every candidate look better on them
    than it is: refuse it (checkpoints record their training images; older ones cannot be checked)."""
    from ..data.split import shared_images

    leaked = shared_images(ckpt.get("train_images") or (), val_dataset)
    if leaked:
        raise DataError(f"{checkpoint}: field 'train_images' includes {len(leaked)} of the {len(val_dataset)} "
                        f"meta-val images of {val} (e.g. {Path(leaked[0]).name}); train the baseline on "
                        f"meta-train only, so the search scores on images its backbone never saw")


def _open_partial(partial: Path, key: str):
    """The partial file to continue, or None when absent, unreadable or of another request."""
    import h5py

    if not partial.is_file():
        return None
    try:
        f = h5py.File(partial, "a")
    except OSError:
        partial.unlink()
        return None
    if f.attrs.get("key") != key:
        f.close()
        partial.unlink()
        return None
    return f


def _write(partial, key, key_fields, sources, datasets, net, levels, crop, crops_per_image, batch_size,
           device, on_progress) -> int:
    import h5py
    import torch

    from ..kernels import fcos_points, fcos_targets
    from ..models.retinanet import anchor_targets, anchors_for

    f = _open_partial(partial, key)
    if f is None:
        f = h5py.File(partial, "w")
        f.attrs.update({"format": FORMAT, "key": key, "key_fields": json.dumps(key_fields),
                        "sources": json.dumps(sources),
                        "levels": json.dumps(list(levels)), "strides": json.dumps(list(PYRAMID_STRIDES)),
                        "crop": crop, "complete": False,
                        "classes": json.dumps(datasets["train"].class_names)})
    seed = int(key_fields["seed"])
    points, ranges = fcos_points(pyramid_sizes(crop))
    anchors = anchors_for(pyramid_sizes(crop))
    total = sum(len(ds) * crops_per_image for ds in datasets.values())
    done_before = sum(int(f[s].attrs["done"]) for s in datasets if s in f)
    computed, started = 0, time.perf_counter()
    with f, torch.no_grad():
        for split, ds in datasets.items():
            n = len(ds) * crops_per_image
            g = f[split] if split in f else _create_split(f, split, n, net, levels, crop, len(points),
                                                          len(anchors))
            done = int(g.attrs["done"])
            for lo in range(done, n, batch_size):
                hi = min(n, lo + batch_size)
                crops, targets = [], []
                for s in range(lo, hi):
                    image_id, image, boxes, labels = crop_sample(ds, s, crops_per_image, seed, crop)
                    crops.append(image)
                    targets.append((image_id, boxes, labels))
                batch = np.stack(crops)  # B×S×S×3 uint8
                if levels == ("images",):
                    g["images"][lo:hi] = batch.transpose(0, 3, 1, 2)
                else:
                    x = torch.from_numpy(np.stack([to_chw_array(c) for c in batch])).to(device)
                    feats = net(x)
                    for lv in levels:
                        g[lv][lo:hi] = feats[lv].to(torch.float16).cpu().numpy()
                for j, (image_id, boxes, labels) in enumerate(targets):
                    lab, ltrb, ctr = fcos_targets(points, ranges, boxes, labels)
                    g["image_id"][lo + j] = image_id
                    g["boxes"][lo + j] = boxes.reshape(-1)
                    g["labels"][lo + j] = labels
                    g["fcos/labels"][lo + j] = lab
                    g["fcos/ltrb"][lo + j] = ltrb
                    g["fcos/ctr"][lo + j] = ctr
                    anchor_labels, anchor_deltas = anchor_targets(anchors, boxes, labels)
                    g["retina/labels"][lo + j] = anchor_labels
                    g["retina/deltas"][lo + j] = anchor_deltas
                g.attrs["done"] = hi
                computed += hi - lo
                if computed % FLUSH_EVERY < batch_size or hi == n:
                    f.flush()
                if on_progress:
                    elapsed = time.perf_counter() - started
                    on_progress({"step": done_before + computed, "steps": total,
                                 "images/s": computed / crops_per_image / max(elapsed, 1e-9)})
    return computed


def _create_split(f, split, n, net, levels, crop, num_points, num_anchors):
    import h5py
    import torch

    g = f.create_group(split)
    if levels == ("images",):
        g.create_dataset("images", (n, 3, crop, crop), np.uint8, chunks=(1, 3, crop, crop))
    else:
        with torch.no_grad():
            probe = net(torch.zeros(1, 3, crop, crop, device=next(net.parameters()).device))
        for lv in levels:
            shape = tuple(probe[lv].shape[1:])
            g.create_dataset(lv, (n, *shape), np.float16, chunks=(1, *shape))
    g.create_dataset("image_id", (n,), np.int64)
    g.create_dataset("boxes", (n,), h5py.vlen_dtype(np.float32))
    g.create_dataset("labels", (n,), h5py.vlen_dtype(np.int64))
    g.create_dataset("fcos/labels", (n, num_points), np.int16, chunks=(1, num_points))
    g.create_dataset("fcos/ltrb", (n, num_points, 4), np.float32, chunks=(1, num_points, 4))
    g.create_dataset("fcos/ctr", (n, num_points), np.float32, chunks=(1, num_points))
    g.create_dataset("retina/labels", (n, num_anchors), np.int16, chunks=(1, num_anchors))
    g.create_dataset("retina/deltas", (n, num_anchors, 4), np.float16, chunks=(1, num_anchors, 4))
    g.attrs["done"] = 0
    return g


def _finalise(partial: Path):
    import h5py

    with h5py.File(partial, "a") as f:
        f.attrs["checksums"] = json.dumps(checksums(f))
        f.attrs["complete"] = True
