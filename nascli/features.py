"""The HDF5 feature cache: build, verify, describe, read.

NAS-FCOS's speed-up (§3.3): freeze the trained backbone, compute its features once per crop, and
train every candidate decoder on the stored features. A cache file is named by a content key, so
the same request reuses it and a different one never mixes with it. Layout (one file):

    attrs      format, key, key_fields (json), levels, strides, complete, checksums (json)
    train/     c2..c5   N×C×H×W float16, one sample per chunk   (or `images`: N×3×S×S uint8)
               image_id N int64; boxes, labels (variable length, crop pixels / class index)
               fcos/labels N×P int16 (-1 background), fcos/ltrb N×P×4 float32, fcos/ctr N×P float32,
               retina/labels N×A int16 (-1 background, -2 ignored), retina/deltas N×A×4 float16
    val/       the same

Written to `<key>.h5.partial` and renamed when complete; an interrupted build resumes from the
last flushed sample (`done` attribute of each split).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import CacheError, DataError, SpecError

FORMAT = "nascli-features/2"  # 2: + RetinaNet anchor targets
FEATURE_LEVELS = ("c2", "c3", "c4", "c5")
LEVEL_STRIDES = {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
PYRAMID_STRIDES = (8, 16, 32, 64, 128)
FLUSH_EVERY = 16  # samples between flushes: the most an interrupted build recomputes


def default_cache_dir(cache_dir=None) -> Path:
    """--cache-dir, then $NASCLI_CACHE, then ./cache (DESIGN.md lookup rule)."""
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


# ------------------------------------------------------------------ building


def build_cache(data, val, out_dir=None, checkpoint=None, backbone: str | None = None, weights=None,
                crop: int = 256, crops_per_image: int = 1, min_size: int | None = None,
                levels=FEATURE_LEVELS, image_dir=None, val_image_dir=None, batch_size: int = 16,
                device="auto", seed: int = 0, on_progress=None) -> dict:
    """Builds (or finds) the cache for this request and returns {path, key, reused, ...}.

    The backbone is the trained baseline's (`checkpoint`) or a torchvision one (`backbone`, with
    `weights`: a file or a torchvision weights name); it runs frozen in eval mode. `levels` is a subset of c2..c5, or
    ("images",) to store the preprocessed uint8 crops instead (backbone searches).
    """

    from .data.coco import CocoDetection
    from .models.backbones import build_backbone
    from .runtime import load_checkpoint, resolve_device

    levels = tuple(levels)
    if levels != ("images",) and (not levels or any(lv not in FEATURE_LEVELS for lv in levels)):
        raise SpecError(f"--levels {','.join(levels)}: choose from {', '.join(FEATURE_LEVELS)} or 'images'")
    if crop % 32:
        raise SpecError(f"--crop {crop}: must be a multiple of 32 (the C5 stride)")
    if (checkpoint is None) == (backbone is None):
        raise SpecError("cache-features: give exactly one of --checkpoint or --backbone")
    device = resolve_device(device)
    min_size = min_size or crop
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        backbone = ckpt["model_args"]["backbone"]
        net = build_backbone(backbone, frozen_bn=ckpt["model_args"].get("frozen_bn", False))
        prefix = "backbone."
        net.load_state_dict({k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)})
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
               "val_image_dir": str(val_image_dir) if val_image_dir else None}
    computed = _write(partial, key, key_fields, sources, datasets, net, levels, crop, crops_per_image,
                      batch_size, device, on_progress)
    _finalise(partial)
    os.replace(partial, final)
    return {"path": str(final), "key": key, "reused": False, "computed_samples": computed,
            "seconds": time.perf_counter() - started, **describe(final)}


def _refuse_leak(checkpoint, ckpt: dict, val, val_dataset) -> None:
    """A backbone that trained on meta-val images would make every candidate look better on them
    than it is: refuse it (checkpoints record their training images; older ones cannot be checked)."""
    from .data.split import shared_images

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

    from .kernels import fcos_points, fcos_targets
    from .models.retinanet import anchor_targets, anchors_for

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


def crop_sample(ds, s: int, crops_per_image: int, seed: int, crop: int):
    """Sample s of a cache: crop k of image s // k, seeded by (seed, image index, k), so the cache
    and any uncached pipeline see identical crops. Returns (image_id, S×S×3 uint8, boxes, labels)."""
    image_index, k = divmod(s, crops_per_image)
    image_id = ds.image_ids[image_index]
    boxes, labels = ds.annotations(image_id)
    rng = np.random.default_rng((seed, image_index, k))
    image, boxes, labels, _ = ds.transform(ds.load_image(image_id), boxes, labels, rng)
    return image_id, _pad(np.asarray(image), crop), boxes, labels


def crop_transform(crop: int, min_size: int | None = None):
    """The cache's preprocessing: short side to min_size (default crop), random crop, no flip."""
    from .data.coco import Transform

    min_size = min_size or crop
    return Transform(min_size, max(min_size, 100_000), crop, flip=False)


def to_chw_array(hwc_uint8: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 crop -> normalised float32 3×H×W (the same normalisation as training)."""
    from .data.coco import IMAGENET_MEAN, IMAGENET_STD

    arr = hwc_uint8.astype(np.float32) / 255.0
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _pad(image: np.ndarray, crop: int) -> np.ndarray:
    """Pads an H×W×3 crop smaller than crop×crop at the bottom/right with the dataset mean colour."""
    if image.shape[:2] == (crop, crop):
        return image
    from .data.coco import IMAGENET_MEAN

    out = np.empty((crop, crop, 3), np.uint8)
    out[:] = np.round(IMAGENET_MEAN * 255).astype(np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    return out


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


# ------------------------------------------------------------------ checking


ARRAY_FIELDS = ("c2", "c3", "c4", "c5", "images", "image_id", "fcos/labels", "fcos/ltrb", "fcos/ctr",
                "retina/labels", "retina/deltas")


def _checksums(f) -> dict:
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


def _finalise(partial: Path):
    import h5py

    with h5py.File(partial, "a") as f:
        f.attrs["checksums"] = json.dumps(_checksums(f))
        f.attrs["complete"] = True


def open_cache(path):
    """Opens a complete nascli cache read-only; anything else is a CacheError naming the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path}: cache file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"{path}: not a readable HDF5 file (truncated or foreign: {e})") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise CacheError(f"{path}: attribute 'format' is not {FORMAT!r}; not a nascli feature cache")
    if not f.attrs.get("complete", False):
        f.close()
        raise CacheError(f"{path}: attribute 'complete' is false; the build was interrupted, rerun it")
    return f


def cache_header(f, path) -> dict:
    """The attributes every reader needs (levels, crop, classes), each checked and named on error."""
    header = {}
    for name, parse, valid in (("levels", json.loads, lambda v: isinstance(v, list) and v and all(
                                    lv in (*FEATURE_LEVELS, "images") for lv in v)),
                               ("crop", int, lambda v: 32 <= v <= 8192 and v % 32 == 0),
                               ("classes", json.loads, lambda v: isinstance(v, list))):
        try:
            header[name] = parse(f.attrs[name])
        except (KeyError, ValueError, TypeError, RecursionError):
            raise CacheError(f"{path}: attribute '{name}' is missing or malformed") from None
        if not valid(header[name]):
            raise CacheError(f"{path}: attribute '{name}' has an invalid value {header[name]!r:.60}")
    return header


@contextmanager
def _reading(path):
    """h5py's errors for a missing or damaged attribute or dataset, as one CacheError line."""
    try:
        yield
    except (KeyError, ValueError, TypeError, OSError, RecursionError) as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise CacheError(f"{path}: damaged ({type(e).__name__}: {reason})") from None


def verify(path) -> dict:
    """Checks attrs, shapes, NaN/inf and the stored checksums; raises CacheError on the first fault."""
    path = Path(path)
    with _reading(path), open_cache(path) as f:
        header = cache_header(f, path)
        levels, crop = header["levels"], header["crop"]
        num_points = sum(h * w for h, w in pyramid_sizes(crop))
        for split in ("train", "val"):
            if split not in f:
                raise CacheError(f"{path}: group '{split}' is missing")
            g = f[split]
            n = g["image_id"].shape[0]
            if int(g.attrs["done"]) != n:
                raise CacheError(f"{path}: {split}.done = {g.attrs['done']} of {n} samples")
            for lv in levels:
                if lv not in g or g[lv].shape[0] != n:
                    raise CacheError(f"{path}: dataset '{split}/{lv}' is missing or has the wrong length")
                if lv != "images":
                    stride = LEVEL_STRIDES[lv]
                    if g[lv].shape[2:] != (crop // stride, crop // stride):
                        raise CacheError(f"{path}: dataset '{split}/{lv}' has spatial shape "
                                         f"{g[lv].shape[2:]}, expected {(crop // stride,) * 2}")
                    for lo in range(0, n, 64):
                        if not np.isfinite(g[lv][lo:lo + 64]).all():
                            raise CacheError(f"{path}: dataset '{split}/{lv}' holds NaN or inf")
            if g["fcos/labels"].shape != (n, num_points):
                raise CacheError(f"{path}: dataset '{split}/fcos/labels' has shape {g['fcos/labels'].shape}")
        stored = json.loads(f.attrs.get("checksums", "{}"))
        if not isinstance(stored, dict):
            raise CacheError(f"{path}: attribute 'checksums' is not a mapping of dataset to digest")
        actual = _checksums(f)
        for name, digest in actual.items():
            if stored.get(name) != digest:
                raise CacheError(f"{path}: checksum of '{name}' does not match (the file was altered)")
    return {"path": str(path), "ok": True, "checked": sorted(actual)}


def describe(path) -> dict:
    """What a cache holds: key fields, classes, per split the sample count and every dataset's shape."""
    path = Path(path)
    with _reading(path), open_cache(path) as f:
        info = {"path": str(path), "key": f.attrs["key"], "key_fields": json.loads(f.attrs["key_fields"]),
                **cache_header(f, path), "bytes": path.stat().st_size, "splits": {},
                "sources": json.loads(f.attrs.get("sources", "{}"))}
        for split in ("train", "val"):
            g = f[split]
            fields = {}
            g.visititems(lambda name, obj: fields.__setitem__(name, {"shape": list(obj.shape),
                                                                      "dtype": str(obj.dtype)})
                         if hasattr(obj, "shape") else None)
            n = g["image_id"].shape[0]
            info["splits"][split] = {"samples": n, "images": len(set(g["image_id"][:].tolist())),
                                     "fields": fields}
    return info


# ------------------------------------------------------------------ reading


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class CachedSplit:
    """One split of a cache served as large batches, without per-sample Python work.

    `in_memory="auto"` loads the whole split into RAM when it takes under half the free memory
    (then batches are any random subset); otherwise batches are contiguous runs of samples read
    straight from the file, their order shuffled. Either way a batch is a few numpy slices.
    Also a map-style torch Dataset: `split[i]` is one sample.
    """

    def __init__(self, path, split: str = "train", in_memory="auto"):
        self.path = Path(path)
        self.file = open_cache(self.path)
        if split not in self.file:
            raise CacheError(f"{self.path}: group '{split}' is missing")
        self.group = self.file[split]
        header = cache_header(self.file, self.path)
        self.levels, self.crop, self.classes = header["levels"], header["crop"], header["classes"]
        self.feature_sizes = pyramid_sizes(self.crop)
        self.fields = [*self.levels, "fcos/labels", "fcos/ltrb", "fcos/ctr", "retina/labels", "retina/deltas",
                       "image_id"]
        size = sum(self.group[k].size * self.group[k].dtype.itemsize for k in self.fields)
        if in_memory == "auto":
            in_memory = size < _available_ram() // 2
        self.in_memory = bool(in_memory)
        self._arrays = {k: self.group[k][:] for k in self.fields} if self.in_memory else None

    def __len__(self):
        return self.group["image_id"].shape[0]

    def in_channels(self) -> dict:
        return {lv: self.group[lv].shape[1] for lv in self.levels if lv != "images"}

    def _read(self, index) -> dict:
        """Fields for a slice (contiguous disk read) or, in memory, any index array."""
        if self.in_memory or isinstance(index, slice):
            source = self._arrays if self.in_memory else self.group
            return {k: source[k][index] for k in self.fields}
        unique, inverse = np.unique(index, return_inverse=True)  # h5py reads increasing, distinct indices
        return {k: self.group[k][unique][inverse] for k in self.fields}

    def __getitem__(self, i):
        return self._read(slice(i, i + 1))

    def boxes(self, i):
        """Ground truth of sample i in crop pixels: (xyxy float32, labels int64)."""
        return self.group["boxes"][i].reshape(-1, 4), self.group["labels"][i]

    def batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, device="cpu",
                dtype=None, drop_last: bool = False, limit: int | None = None, indices=None):
        """Yields dicts of torch tensors: each level (N×C×H×W, fp16 -> `dtype`, default float32),
        `labels` (N×P), `ltrb` (N×P×4), `ctr` (N×P) (FCOS targets), `anchor_labels` (N×A),
        `anchor_deltas` (N×A×4) (RetinaNet targets), `image_id` (N), `index` (N).

        `limit` uses only the first `limit` samples (a proxy's sample budget), in full batches;
        `indices` only those samples (one half of meta-train, for a bi-level search)."""
        import torch

        dtype = dtype or torch.float32
        n = len(self) if limit is None else min(limit, len(self))
        rng = np.random.default_rng(seed)
        if self.in_memory or indices is not None:
            pool = np.arange(n) if indices is None else np.asarray(indices)
            n = n if indices is None else len(self)
            order = rng.permutation(pool) if shuffle else pool
            chunks = [np.sort(order[lo:lo + batch_size]) for lo in range(0, len(pool), batch_size)]
        else:
            starts = np.arange(0, n, batch_size)
            if shuffle:
                starts = rng.permutation(starts)
            chunks = [slice(int(lo), int(min(n, lo + batch_size))) for lo in starts]
        for index in chunks:
            count = len(index) if isinstance(index, np.ndarray) else index.stop - index.start
            if drop_last and count < batch_size:
                continue
            raw = self._read(index)
            batch = {lv: torch.from_numpy(raw[lv]).to(device, non_blocking=True).to(dtype)
                     for lv in self.levels}
            batch["labels"] = torch.from_numpy(raw["fcos/labels"].astype(np.int64)).to(device)
            batch["ltrb"] = torch.from_numpy(raw["fcos/ltrb"]).to(device)
            batch["ctr"] = torch.from_numpy(raw["fcos/ctr"]).to(device)
            batch["anchor_labels"] = torch.from_numpy(raw["retina/labels"].astype(np.int64)).to(device)
            batch["anchor_deltas"] = torch.from_numpy(raw["retina/deltas"]).to(device).float()
            batch["image_id"] = torch.from_numpy(raw["image_id"])
            batch["index"] = torch.from_numpy(np.arange(n)[index])
            yield batch

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
