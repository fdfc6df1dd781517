"""The HDF5 feature cache (NAS-FCOS §3.3's speed-up): freeze the trained backbone, compute its
features once per crop, and train every candidate decoder on the stored features.

format.py  the file's version, levels, content key and checksums (the layout is documented there)
crops.py   which crop a sample is and how it is preprocessed (shared with the uncached pipeline)
write.py   build_cache: features or image crops plus the detectors' targets, resumable
read.py    open, verify, describe, and CachedSplit (the batches trials train and score on)
"""

from .crops import crop_sample, crop_transform, to_chw_array
from .format import FEATURE_LEVELS, FORMAT, default_cache_dir, pyramid_sizes
from .read import CachedSplit, describe, open_cache, verify
from .write import build_cache

__all__ = ["FEATURE_LEVELS", "FORMAT", "CachedSplit", "build_cache", "crop_sample", "crop_transform",
           "default_cache_dir", "describe", "open_cache", "pyramid_sizes", "to_chw_array", "verify"]
