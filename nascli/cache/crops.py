"""The cache's image preprocessing: which crop a sample is, and how it is padded and normalised
(shared with the uncached pipeline, so both see identical crops)."""

from __future__ import annotations


import numpy as np


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
    from ..data.coco import Transform

    min_size = min_size or crop
    return Transform(min_size, max(min_size, 100_000), crop, flip=False)


def to_chw_array(hwc_uint8: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 crop -> normalised float32 3×H×W (the same normalisation as training)."""
    from ..data.coco import IMAGENET_MEAN, IMAGENET_STD

    arr = hwc_uint8.astype(np.float32) / 255.0
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _pad(image: np.ndarray, crop: int) -> np.ndarray:
    """Pads an H×W×3 crop smaller than crop×crop at the bottom/right with the dataset mean colour."""
    if image.shape[:2] == (crop, crop):
        return image
    from ..data.coco import IMAGENET_MEAN

    out = np.empty((crop, crop, 3), np.uint8)
    out[:] = np.round(IMAGENET_MEAN * 255).astype(np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    return out
