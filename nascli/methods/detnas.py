"""DetNAS (papers/detnas.md): its one-shot supernet on cached image crops (papers/detnas.md §3.2): path-wise training,
and the score of one path with the supernet's weights.

Training has the paper's two phases, both path-wise (each step samples one path uniformly; only
its modules get gradients):
1. pre-training: ImageNet in the paper, out of reach offline. Here a classification proxy on the
   dataset's own objects: every box of a meta-train crop cut out (roi_align to `patch`×`patch`)
   and classified from the supernet's pooled C5 by a linear layer. Or `weights`: a file holding
   a pre-trained Supernet state_dict (then this phase is skipped).
2. fine-tuning: the supernet under an FCOS decoder, detection losses on the crops.
SGD (momentum 0.9, weight decay; the paper's) or AdamW (`optimizer`: path-wise SGD stays at
chance on small data, `make bench-supernet`), a cosine learning rate per phase. Plain BatchNorm:
SyncBN, the paper's answer to small per-GPU batches, has nothing to synchronise in one process. After every epoch the whole
state is written to RUN/supernet.pt (atomically), so a killed training resumes exactly.

Scoring a path (`evaluate_path`, the search's evaluator; pure given the supernet file): the path
is extracted as a standalone network with the supernet's weights, its BatchNorm statistics are
recomputed with no gradient on `bn_samples` meta-train crops (drawn by the trial's seed: the
paper's "indispensable" step), and its detections on meta-val give the fitness, AP.
"""

from __future__ import annotations

import copy
import math
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch import nn

from ..config import ProxySpec, Spec, validate
from ..errors import CheckpointError
from ..files import written_whole
from ..runtime import sub_state, training_precision
from ..spaces import detnas
from ..strategies.evolution import EvolutionOptions, EvolutionStrategy
from ..trial import (ImageDetector, TrialResult, cosine, normalize, open_split, outcome, recompute_batchnorm, score,
                     keep_every_box, sgd_step)
from .base import IMAGES, Method, TrialSetup


class SupernetOptions(Spec):
    """`supernet:` in a detnas proxy spec."""

    model_config = ConfigDict(extra="forbid")

    layout: str = Field("small", description="small (20 blocks, [4,4,8,4]) or large (40, [8,8,16,8])")
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier (paper: 1)")
    depth: float = Field(1.0, gt=0, le=4, description="block-count multiplier (paper: 1)")
    pretrain_epochs: int = Field(5, ge=0, description="classification proxy on object crops (paper: ImageNet)")
    finetune_epochs: int = Field(10, ge=1, description="path-wise detection fine-tuning")
    weights: str | None = Field(None, description="a pre-trained Supernet state_dict file (skips pre-training)")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd: the paper's (momentum 0.9); adamw: "
                                               "learns path-wise on small data where sgd stays at chance "
                                               "(make bench-supernet)")
    lr: float = Field(0.05, gt=0)
    weight_decay: float = Field(4e-5, ge=0)
    batch_size: int = Field(16, ge=1)
    patch: int = Field(32, ge=16, description="object crops for pre-training, pixels")
    num_convs: int = Field(2, ge=0, le=8, description="FCOS head tower depth")
    bn_samples: int = Field(64, ge=1, description="meta-train crops for BatchNorm recalibration (paper: 500 images)")

    def space_spec(self) -> detnas.SpaceSpec:
        return detnas.SpaceSpec(self.layout, self.width, self.depth)


def options_of(spec: ProxySpec) -> SupernetOptions:
    return validate(SupernetOptions, spec.supernet, "proxy spec field 'supernet'")


class SupernetDetector(nn.Module):
    """The supernet, an FCOS decoder for fine-tuning, and a linear classifier for pre-training."""

    def __init__(self, options: SupernetOptions, num_classes: int, width: int):
        super().__init__()
        from ..models.detector import FCOSDecoder

        self.supernet = detnas.Supernet(options.space_spec())
        self.decoder = FCOSDecoder(self.supernet.out_channels, num_classes, width=width, num_convs=options.num_convs)
        self.classifier = nn.Linear(self.supernet.out_channels["c5"], num_classes)


def _paths(n: int, blocks: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(len(detnas.CHOICES), size=(n, blocks))


def _object_patches(train, batch, images, patch: int):
    from torchvision.ops import roi_align

    boxes, labels = [], []
    for i in batch["index"].tolist():
        b, lab = train.boxes(i)
        keep = (b[:, 2] - b[:, 0] >= 2) & (b[:, 3] - b[:, 1] >= 2)
        boxes.append(torch.from_numpy(np.ascontiguousarray(b[keep])).float().to(images.device))
        labels.append(torch.from_numpy(np.asarray(lab)[keep]).long().to(images.device))
    if not sum(len(b) for b in boxes):
        return None, None
    return roi_align(images, boxes, patch, 1.0, aligned=True), torch.cat(labels)


def train_supernet(path, spec: ProxySpec, cache, seed: int = 0, on_progress=None, device="cpu") -> dict:
    """Trains (or resumes, or finds finished) the supernet at `path`; returns its summary."""
    o = options_of(spec)
    path = Path(path)
    train = open_split(str(cache), "train")
    torch.manual_seed(seed)
    model = SupernetDetector(o, len(train.classes), spec.width)
    phases = [("pretrain", o.pretrain_epochs), ("finetune", o.finetune_epochs)]
    state = {"phase": 0, "epoch": 0, "history": []}
    if o.weights:
        model.supernet.load_state_dict(_load_weights(o.weights))
        phases[0] = ("pretrain", 0)
    optimizer, precision = None, training_precision(device, spec.amp)
    model = model.to(device)
    if path.is_file():
        saved = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        state = saved["state"]
        if saved.get("scaler"):
            precision.scaler.load_state_dict(saved["scaler"])
        if saved.get("optimizer") is not None:
            optimizer = supernet_optimizer(model, o)
            optimizer.load_state_dict(saved["optimizer"])
    blocks = model.supernet.spec.blocks()
    started = time.perf_counter()
    while state["phase"] < len(phases):
        name, epochs = phases[state["phase"]]
        if state["epoch"] >= epochs:
            state["phase"], state["epoch"], optimizer = state["phase"] + 1, 0, None
            continue
        optimizer = optimizer or supernet_optimizer(model, o)
        e = state["epoch"]
        per_epoch = math.ceil(len(train) / o.batch_size)  # what batches() yields (drop_last off)
        paths = _paths(per_epoch, blocks, seed * 1000 + 100 * state["phase"] + e)
        total, steps, loss_sum = epochs * per_epoch, 0, 0.0
        model.train()
        batches = train.batches(o.batch_size, True, seed * 1000 + 100 * state["phase"] + e, device)
        for k, (batch, p) in enumerate(zip(batches, paths)):
            loss = (_pretrain_loss(model, train, batch, p, o, precision) if name == "pretrain"
                    else _finetune_loss(model, batch, p, precision))
            if loss is None:
                continue
            sgd_step(optimizer, loss, cosine(e * per_epoch + k, total, o.lr), f"supernet {name} epoch {e + 1}",
                     precision)
            steps, loss_sum = steps + 1, loss_sum + loss.item()
            if on_progress:
                on_progress({"phase": f"supernet {name} epoch {e + 1}/{epochs}", "step": k + 1, "steps": per_epoch})
        state["epoch"] += 1
        state["history"].append({"phase": name, "epoch": e + 1, "loss": loss_sum / max(1, steps)})
        _save(path, model, optimizer, state, precision)
    if not path.is_file():
        _save(path, model, None, state, precision)
    return {"path": str(path), "history": state["history"], "seconds": time.perf_counter() - started}


def supernet_optimizer(model, o: SupernetOptions):
    """The supernet's optimiser: SGD (the paper's) or AdamW, as the options say."""
    # Modules off the sampled path have no gradient (zero_grad sets None), and torch's SGD and
    # AdamW skip them entirely - momentum, moments and weight decay included - so only the path moves.
    if o.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=0.9, weight_decay=o.weight_decay)


def pretrain_logits(model, train, batch, path, o):
    """The classification proxy's logits for the batch's object crops under `path`, and their labels."""
    images = normalize(batch["images"])
    patches, labels = _object_patches(train, batch, images, o.patch)
    if patches is None:
        return None, None
    feats = model.supernet(patches, tuple(int(c) for c in path))["c5"].mean((2, 3))
    return model.classifier(feats), labels


def _pretrain_loss(model, train, batch, path, o, precision):
    logits, labels = precision.forward(pretrain_logits, model, train, batch, path, o)
    return None if logits is None else nn.functional.cross_entropy(logits, labels)


def _finetune_loss(model, batch, path, precision):
    detector = ImageDetector(model.supernet, model.decoder)
    model.supernet.path = tuple(int(c) for c in path)
    return sum(detector.loss_from_batch(precision.forward(detector, batch), batch).values())


def _save(path: Path, model, optimizer, state, precision) -> None:
    with written_whole(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
                    "state": state, "scaler": precision.scaler.state_dict()}, tmp)


def _load_weights(file) -> dict:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: not a readable supernet state_dict ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: not a supernet state_dict")
    return state


@lru_cache(maxsize=2)
def _trained(path: str, mtime: float) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def path_backbone_state(genotype: detnas.Genotype, supernet_path) -> dict:
    """The weights of one path's standalone backbone, from a trained supernet file (retraining's start)."""
    supernet_path = Path(supernet_path)
    if not supernet_path.is_file():
        raise CheckpointError(f"{supernet_path}: the trained supernet is missing")
    model = _trained(str(supernet_path), supernet_path.stat().st_mtime)
    supernet = detnas.Supernet(genotype.spec)
    supernet.load_state_dict(sub_state(model, "supernet."))
    return supernet.extract(genotype).state_dict()


def path_detector(genotype: detnas.Genotype, spec: ProxySpec, num_classes: int, supernet_path) -> ImageDetector:
    """The standalone detector of one path with the trained supernet's weights."""
    supernet_path = Path(supernet_path)
    if not supernet_path.is_file():
        raise CheckpointError(f"{supernet_path}: the trained supernet is missing (search --resume trains it)")
    model = SupernetDetector(options_of(spec), num_classes, spec.width)
    model.load_state_dict(_trained(str(supernet_path), supernet_path.stat().st_mtime))
    return ImageDetector(model.supernet.extract(genotype), copy.deepcopy(model.decoder))


def evaluate_path(genotype, spec: ProxySpec, cache_path, seed: int = 0, data_seed: int = 0,
                  supernet_path=None, device="cpu") -> TrialResult:
    """A path's fitness: inherited weights, BatchNorm recalibrated on `bn_samples` meta-train crops
    drawn by `seed`, AP on meta-val. Nothing is trained."""
    started = time.perf_counter()
    o = options_of(spec)
    train, val = open_split(str(cache_path), "train"), open_split(str(cache_path), "val")
    detector = path_detector(genotype, spec, len(train.classes), supernet_path)
    cost = {"params": sum(p.numel() for p in detector.backbone.parameters()),
            "flops": detnas.flops(genotype, train.crop)}
    detector = detector.to(device)
    # a random subset; a bootstrap sample where meta-train is no larger (else every seed agreed: noise 0)
    subset = np.sort(np.random.default_rng(seed).choice(len(train), o.bn_samples, replace=o.bn_samples >= len(train)))
    with torch.no_grad():
        recompute_batchnorm(detector, train.batches(o.batch_size, False, device=device, indices=subset))
    detector.eval()
    keep_every_box(detector.decoder)
    losses, ap = score(detector, val, spec, True, device)
    return outcome(losses, ap, "ap", started, cost)


def supernet_file(run_dir, other_run, spec: ProxySpec) -> Path:
    """The supernet a run scores paths of: its own (RUN/supernet.pt, trained by the search), or,
    with `other_run`, that run's finished one (the paper's Figure 2: evolution and random sampling
    on one supernet); its `supernet:` options must be this spec's."""
    from ..config import load_spec
    from ..errors import SpecError

    if other_run is None:
        return Path(run_dir) / "supernet.pt"
    path = Path(other_run).resolve() / "supernet.pt"
    if not path.is_file():
        raise SpecError(f"--supernet {other_run}: {path} not found (search that run first)")
    theirs = Path(other_run) / "spec.yaml"
    if theirs.is_file() and options_of(load_spec(ProxySpec, theirs)) != options_of(spec):
        raise SpecError(f"{theirs}: field 'supernet' differs from this search's spec; the paths would not fit "
                        f"that supernet")
    o, state = options_of(spec), torch.load(path, map_location="cpu", weights_only=True)["state"]
    if state["phase"] == 0 or state["epoch"] < o.finetune_epochs:
        raise SpecError(f"--supernet {other_run}: its supernet is still training (resume that run first)")
    return path


def trial(spec: ProxySpec, cache, run_dir, seed: int, device: str, driver_device: str = "cpu", on_progress=None,
          supernet=None, **_) -> TrialSetup:
    """The one-shot supernet first (trained on the driver, resumable; or another run's, finished),
    then each trial scores a path with its weights."""
    path = supernet_file(run_dir, supernet, spec)
    if supernet is None:
        train_supernet(path, spec, cache, seed, on_progress, driver_device)
    return TrialSetup(partial(evaluate_path, supernet_path=path, device=device), readable={"supernet": path},
                      meta={"supernet": str(path)} if supernet is not None else {})


def shufflenet_control(spec: ProxySpec, cache):
    """The hand design of the family: ShuffleNetV2, every block 3x3, in the spec's layout."""
    space = detnas.from_spec(spec)
    return space.decode([0] * len(space.decisions()))


def evolution_options(spec: ProxySpec, cache, trials: int, lam=None) -> dict:
    return dict(spec.evolution)


def supernet_of(run_dir, meta: dict) -> Path:
    """Retraining starts every path (and the ShuffleNetV2 control) from the supernet the run scored."""
    return Path(meta.get("supernet") or Path(run_dir) / "supernet.pt")


METHOD = Method(name="detnas", space=detnas, strategy=EvolutionStrategy, proxy="detnas", reward="ap", cache=IMAGES,
                control=shufflenet_control, trial=trial, options=evolution_options, retrain_init=supernet_of,
                backbone_state=path_backbone_state, sections={"supernet": SupernetOptions, "evolution": EvolutionOptions})
