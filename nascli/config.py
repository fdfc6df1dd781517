"""Pydantic models for the YAML specs, and the one loader that turns their errors into one line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SpecError


class Spec(BaseModel):
    """Base of every spec: unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


Backbone = Literal["resnet18", "resnet34", "resnet50", "mobilenet_v2"]
MAX_WIDTH = 4096  # channels: a wider decoder is a typo or a corrupted file, not a model


class ModelArgs(Spec):
    """What rebuilds a checkpoint's detector (stored in it), bounded so that a corrupted file
    cannot ask for an absurd model."""

    num_classes: int = Field(ge=1, le=100_000)
    backbone: Backbone
    frozen_bn: bool = False
    width: int = Field(ge=8, le=MAX_WIDTH)
    num_convs: int = Field(ge=0, le=8)
    genotype: dict | None = None
    head_width: int | None = Field(None, ge=8, le=MAX_WIDTH)
    deep_supervision: bool = False


class TrainConfig(Spec):
    """Everything that defines a baseline training run; stored in its checkpoints."""

    data: str
    val: str | None = None
    image_dir: str | None = None
    out: str = "runs/baseline"
    backbone: Backbone = "resnet18"
    weights: str | None = None
    init_from: str | None = Field(None, description="checkpoint whose backbone initialises this one")
    frozen_bn: bool = False
    width: int = Field(128, ge=8, le=MAX_WIDTH, description="FPN and head channels (FCOS: 256)")
    num_convs: int = Field(4, ge=0, le=8, description="head tower depth (FCOS: 4)")
    genotype: dict | None = Field(None, description="searched decoder (default: FPN + FCOS head)")
    head_width: int | None = Field(None, ge=8, le=MAX_WIDTH, description="head channels if not `width` (@128-256)")
    deep_supervision: bool = Field(False, description="NAS-FPN anytime detection: train the head on every stage")
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd (FCOS's, with momentum) or adamw (the "
                                                  "proxy's family; betas 0.9/0.999)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_iters: int = Field(100, ge=0, description="linear warm-up iterations (unless warmup_fraction)")
    warmup_fraction: float | None = Field(None, gt=0, lt=1, description="warm-up as this fraction of the "
                                          "schedule, at least the first epoch (at most 500 iterations)")
    warmup_start: float = Field(0.001, gt=0, le=1, description="warm-up starts at this fraction of the peak lr")
    frozen_backbone_epochs: int = Field(0, ge=0, description="first epochs with the backbone's weights frozen: a "
                                        "new decoder learns on fixed features before fine-tuning (LP-FT)")
    min_size: int = Field(256, ge=32, description="short side after resizing (FCOS: 800)")
    max_size: int = Field(512, ge=32)
    crop: int = Field(0, ge=0, description="random square crop side for training, 0 = none")
    flip: bool = True
    workers: int = Field(0, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    watch: bool = Field(True, description="the baseline's guards: stop when the classification loss diverges, "
                        "then score the result (AP on `val`, else on training images) into the checkpoint")


class TrialResources(Spec):
    """What one trial asks of a Ray cluster (`--executor ray`); the local executor ignores it."""

    cpus: float = Field(1, gt=0, description="CPUs per trial (also its torch threads)")
    gpus: float = Field(0, ge=0, description="GPUs per trial (a fraction shares one GPU)")
    retries: int = Field(2, ge=0, description="re-queues of a trial whose worker died before it is failed")


class ProxySpec(Spec):
    """A proxy task: the space's size and how one candidate is trained and scored.

    NAS-FCOS (§4.1): C2..C5 inputs, width 64, 7 FPN blocks, 5 head blocks, Adam 8e-4, batch 200,
    Polyak averaging 0.9, 15 epochs, 384×384 crops, reward -(L_cls + L_reg + L_ctr).
    NAS-FPN (§4.2): 7 merging cells, 3 stacked pyramids, 10 epochs, reward AP on held-out images.
    CPU specs scale these down.
    """

    space: str = Field("nas-fcos", description="the space searched: one a registered method searches "
                                                "(nascli/methods/__init__.py)")
    reward: Optional[Literal["loss", "ap"]] = Field(
        None, description="loss: -(sum of the detector's losses) on meta-val; ap: AP@[.5:.95] on "
                          "meta-val (default: loss for nas-fcos and auto-fpn, ap for nas-fpn, sp-nas and detnas, "
                          "as the papers)")
    cells: int = Field(7, ge=5, description="NAS-FPN merging cells")
    repeats: int = Field(3, ge=1, description="NAS-FPN stacked pyramids")
    inputs: list[str] = ["c2", "c3", "c4", "c5"]
    width: int = Field(64, ge=4)
    fpn_blocks: int = Field(7, ge=3)
    head_blocks: int = Field(5, ge=0)
    fpn_ops: list[str] = ["sep3x3", "sep3x3_d3", "sep5x5_d6", "skip", "deform3x3"]
    head_ops: list[str] = ["sep3x3", "sep3x3_d3", "sep5x5_d6", "skip", "deform3x3"]
    epochs: int = Field(15, ge=1, description="passes over meta-train (at least; see min_steps)")
    min_steps: int = Field(0, ge=0, description="optimiser steps at least: more epochs on a small meta-train")
    batch_size: int = Field(200, ge=1)
    lr: float = Field(8e-4, gt=0)
    polyak: float = Field(0.9, ge=0, lt=1, description="decay of the weight average used for scoring")
    max_train_samples: int | None = Field(None, ge=1)
    max_val_samples: int | None = Field(None, ge=1)
    controller: dict = Field(default_factory=dict, description="options of the LSTM+PPO controller")
    layers: int = Field(2, ge=1, description="Auto-FPN neck layers (paper: 2)")
    head_cells: int = Field(2, ge=1, description="Auto-FPN head cells (paper: 2)")
    darts: dict = Field(default_factory=dict, description="options of the Auto-FPN supernet training "
                                                          "(nascli.strategies.darts.DartsOptions)")
    morphism: dict = Field(default_factory=dict, description="options of the SP-NAS search "
                                                              "(nascli.strategies.morphism.MorphismOptions)")
    supernet: dict = Field(default_factory=dict, description="the DetNAS supernet and its training "
                                                              "(nascli.methods.detnas.SupernetOptions)")
    evolution: dict = Field(default_factory=dict, description="options of the evolutionary search "
                                                              "(nascli.strategies.evolution.EvolutionOptions)")
    amp: bool = Field(False, description="mixed precision on CUDA for training candidates (and the DetNAS "
                                         "supernet): float16 autocast with loss scaling; losses and scoring stay "
                                         "float32. The CPU trains in float32 either way (nascli.runtime."
                                         "training_precision says why)")
    resources: TrialResources = Field(default_factory=TrialResources)
    control: Optional[str] = Field(
        None, description="the control arm, scored first outside the budget: zoo:NAME or a genotype "
                          "json (default: the family's hand design, FPN + FCOS head with the baseline's "
                          "tower depth for nas-fcos, zoo:fpn-retinanet for nas-fpn)")
    rescore_top: int = Field(3, ge=0, description="the best K trials re-scored with fresh seeds at the end")
    rescore_seeds: int = Field(3, ge=2, description="seeds per re-scored genotype (and for the control)")

    @field_validator("space")
    @classmethod
    def _registered_space(cls, space: str) -> str:
        """The spaces a spec may name are the registry's: a sixth method's spec needs no edit here."""
        from .methods import METHODS

        known = [m.space.SPACE for m in METHODS.values()]
        if space not in known:
            raise ValueError(f"{space!r} is not a space any method searches; choose one of {', '.join(known)}")
        return space


BUILTIN_PROXIES = Path(__file__).parent / "proxies"  # package data: found from any folder


def proxy_specs() -> dict[str, Path]:
    """Every spec a `--proxy NAME` can name, {name: path}: the package's built-ins, overridden by
    ./proxies/NAME.yaml in the working folder."""
    found = {}
    for folder in (BUILTIN_PROXIES, Path("proxies")):
        if folder.is_dir():
            found.update({p.stem: p for p in sorted(folder.glob("*.yaml"))})
    return found


def resolve_proxy(name_or_path) -> Path:
    """A proxy spec is a path, or a name resolved in ./proxies/, then among the specs shipped in
    the package (docs/design.md, lookup rules)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = proxy_specs()
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    raise SpecError(f"{name_or_path}: proxy spec not found (not a file, not ./proxies/{name_or_path}.yaml, "
                    f"not a built-in: {', '.join(sorted(known))})")


def load_yaml(path) -> dict:
    """Reads a YAML mapping; a missing or malformed file is a SpecError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, RecursionError) as e:
        raise SpecError(f"{path}: not a text YAML file ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: malformed YAML{where}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping of field: value")
    return data


def validate(model: type[Spec], data: dict, source: str):
    """Builds `model` from data; the first error names the source and the dotted field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise SpecError(f"{source}: field '{field}': {err['msg'].removeprefix('Value error, ')}") from None


def load_spec(model: type[Spec], path, overrides: dict | None = None):
    """A spec from YAML with command-line overrides applied on top (None means 'not given')."""
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(model, data, str(path) if path else "options")
