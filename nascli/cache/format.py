"""The cache file's format: its version, levels and strides, its content key and checksums.

Layout (one HDF5 file, named by its content key, so the same request reuses it and a different
one never mixes with it):

    attrs      format, key, key_fields (json), levels, strides, complete, checksums (json)
    train/     c2..c5   N×C×H×W float16, one sample per chunk   (or `images`: N×3×S×S uint8)
               image_id N int64; boxes, labels (variable length, crop pixels / class index)
               fcos/labels N×P int16 (-1 background), fcos/ltrb N×P×4 float32, fcos/ctr N×P float32,
               retina/labels N×A int16 (-1 background, -2 ignored), retina/deltas N×A×4 float16
    val/       the same
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np


FORMAT = "nascli-features/2"  # 2: + RetinaNet anchor targets
FEATURE_LEVELS = ("c2", "c3", "c4", "c5")
LEVEL_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
PYRAMID_STRIDES = (8, 16, 32, 64, 128)
ARRAY_FIELDS = ("c2", "c3", "c4", "c5", "images", "image_id", "fcos/labels", "fcos/ltrb", "fcos/ctr",
                "retina/labels", "retina/deltas")


def default_cache_dir(cache_dir=None) -> Path:
    """--cache-dir, then $NASCLI_CACHE, then ./cache (docs/design.md, lookup rules)."""
    return Path(cache_dir or os.environ.get("NASCLI_CACHE") or "cache")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensors_digest(state_dict) -> str:
    """A hash of a state_dict's tensors (names, shapes, bytes): identifies backbone weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype.is_floating_point or t.dtype.is_signed else b"")
    return h.hexdigest()


def pyramid_sizes(crop: int):
    """P3..P7 sizes for a crop×crop input (ceil division at each stride-2 step, as the convs do)."""
    sizes, side = [], math.ceil(crop / 8)
    for _ in PYRAMID_STRIDES:
        sizes.append((side, side))
        side = math.ceil(side / 2)
    return sizes


def cache_key(key_fields: dict) -> str:
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]


def checksums(f) -> dict:
    """sha256 of every fixed-size dataset, read in chunks of samples."""
    sums = {}
    for split in ("train", "val"):
        for name in ARRAY_FIELDS:
            path = f"{split}/{name}"
            if path not in f:
                continue
            d, h = f[path], hashlib.sha256()
            step = max(1, (64 << 20) // max(1, d.dtype.itemsize * int(np.prod(d.shape[1:]))))
            for lo in range(0, d.shape[0], step):
                h.update(np.ascontiguousarray(d[lo:lo + step]).tobytes())
            sums[path] = h.hexdigest()
    return sums
