"""Reading a cache: opening a complete one, its header, verifying it end to end, describing it,
and `CachedSplit`, the batches every trial trains and scores on."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .format import FEATURE_LEVELS, FORMAT, LEVEL_STRIDES, checksums, pyramid_sizes


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
        actual = checksums(f)
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
