"""Where and how things run: device choice, seeding, and crash-safe checkpoint files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, SpecError

CHECKPOINT_FORMAT = "nascli-checkpoint/1"


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available on this machine (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise SpecError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict:
    import torchvision

    from . import __version__

    return {"nascli": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def save_checkpoint(payload: dict, path) -> Path:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "versions": versions(), **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Loads with weights_only=True; a missing, foreign or truncated file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zipfile, pickle and runtime errors all mean "not ours / damaged"
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: field 'format' is not {CHECKPOINT_FORMAT!r}; not a nascli checkpoint")
    return ckpt
