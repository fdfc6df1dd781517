"""SP-NAS (papers/sp-nas.md): the backbone trial. Train and score one candidate on cached image
crops, from inherited weights; and how a grown backbone starts retraining.

SP-NAS's "fast training scheme" (§4): the candidate (its backbone morphed from its parent's
trained one, the parent's decoder carried over) trains every parameter for the spec's `epochs`
(paper: 3) with SGD, cosine learning rate `lr` -> `morphism.lr_min` (paper: 0.02 -> 1e-4),
momentum 0.9, weight decay 1e-4; then it is scored on the meta-val crops like every other proxy (AP, the paper's
"acc", or the loss). The start of every lineage is the baseline detector the cache was built from
(its ResNet backbone as a SerialNet, its FPN + FCOS head): the user's own "pretrained" network.

*Reignite* (Algorithm 1) re-runs the pre-training on the current architecture: here the
pre-training is the baseline's detection training, so the candidate is re-initialised and trained
for `reignite_epochs` (default: the baseline's own epochs) on the crops. ImageNet is out of reach
offline, so this is the closest faithful reading; the README states it.

With every weight inherited, a trial's seed has almost nothing to initialise (an expanded block's
convs, a parallel level's 1×1 convs), so it also draws the batch order: the re-scored seeds then
measure the proxy's real seed noise (with one order for all, the control scored 0 noise and every
difference looked significant); the price is that candidates are not paired by batch order.

Weights travel through files, so the evaluation stays a function of its arguments (any executor
can run it): a candidate loads `weights_dir/<parent>.pt` and leaves `weights_dir/<tag>.pt`. Only
the first evaluation of a tag writes its file (the search's trial comes before any re-scoring);
a resumed trial recomputes the same weights, so an existing file is kept.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache, partial
from pathlib import Path

import torch
from torch import nn

from ..cache import describe
from ..config import ProxySpec, validate
from ..errors import CheckpointError, SpecError
from ..files import written_whole
from ..runtime import sub_state, training_precision
from ..spaces import spnas
from ..strategies.morphism import MorphismOptions, MorphismStrategy
from ..trial import (TRIAL_ERRORS, ImageDetector, TrialResult, cosine, failure, image_detector_cost, open_split,
                     keep_every_box, outcome, score, sgd_step)
from .base import IMAGES, Method, TrialSetup


def baseline_of(cache) -> dict:
    """The checkpoint the cache was built from: the start of every SP-NAS lineage (read once per
    process; nothing here changes it)."""
    return _baseline(str(cache))


@lru_cache(maxsize=2)
def _baseline(cache: str) -> dict:
    from ..runtime import load_checkpoint

    source = describe(cache).get("sources", {}).get("checkpoint")
    if not source:
        raise SpecError(f"{cache}: built from a torchvision backbone, not a baseline checkpoint; sp-nas starts "
                        f"from the baseline detector (cache-features --checkpoint CKPT --levels images)")
    if not Path(source).is_file():
        raise CheckpointError(f"{cache}: field 'sources.checkpoint' names {source}, which is not found from "
                              f"{Path.cwd()} (run from the folder the cache was built in)")
    return load_checkpoint(source)


def start_genotype(ckpt: dict) -> spnas.Genotype:
    backbone = ckpt["model_args"]["backbone"]
    if backbone not in spnas.STARTS:
        raise SpecError(f"sp-nas grows a ResNet; the baseline's backbone is {backbone!r} "
                        f"(train one with --backbone {' | '.join(spnas.STARTS)})")
    return spnas.Genotype(serial=str(spnas.STARTS[backbone]), stem="resnet", base_channels=64)


def _decoder(ckpt: dict, in_channels: dict) -> nn.Module:
    from ..models.detector import FCOSDecoder

    args = ckpt["model_args"]
    return FCOSDecoder(in_channels, args["num_classes"], width=args["width"], num_convs=args["num_convs"])


def start_detector(ckpt: dict) -> tuple[spnas.Genotype, ImageDetector]:
    """The baseline detector rebuilt as a SerialNet + its decoder, with its trained weights."""
    genotype = start_genotype(ckpt)
    backbone = spnas.build_backbone(genotype)
    model = ckpt["model"]
    backbone.load_state_dict(sub_state(model, "backbone.body."))
    decoder = _decoder(ckpt, backbone.out_channels)
    decoder.load_state_dict(sub_state(model, "decoder."))
    return genotype, ImageDetector(backbone, decoder)


def carry_matching(source: nn.Module, target: nn.Module) -> list[str]:
    """Copies every tensor whose name and shape match; returns the names left at their initialisation."""
    mine, theirs = target.state_dict(), source.state_dict()
    fresh = [k for k, v in mine.items() if k not in theirs or theirs[k].shape != v.shape]
    target.load_state_dict({**mine, **{k: v for k, v in theirs.items() if k in mine and v.shape == mine[k].shape}})
    return fresh


def inherit(genotype: spnas.Genotype, ckpt: dict, weights_dir) -> ImageDetector:
    """The candidate with its inherited weights: its parent's detector, morphed by `genotype.morphs`
    (a decoder input whose channels changed is the only thing re-initialised)."""
    if not genotype.parent:
        _, detector = start_detector(ckpt)
    else:
        path = Path(weights_dir) / f"{genotype.parent}.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: the weights of parent {genotype.parent!r} are missing")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        parent = spnas.Genotype.from_json(saved["genotype"], str(path))
        backbone = spnas.build_backbone(parent)
        detector = ImageDetector(backbone, _decoder(ckpt, backbone.out_channels))
        detector.load_state_dict(saved["model"])
    backbone = detector.backbone
    for step in genotype.morphs:
        backbone = spnas.apply_morph(backbone, step)
    if backbone.out_channels != detector.backbone.out_channels:
        decoder = _decoder(ckpt, backbone.out_channels)
        carry_matching(detector.decoder, decoder)
    else:
        decoder = detector.decoder
    return ImageDetector(backbone, decoder)


def from_baseline(genotype: spnas.Genotype, lineage: dict) -> spnas.Genotype:
    """The same architecture reached from the baseline's weights in one go: the morphs of every
    ancestor (`lineage`: tag -> genotype) in order, reignitions left out. Retraining starts
    every promoted backbone this way, so a grown backbone and the start differ only in architecture,
    not in how much training their weights had during the search."""
    steps, g = [], genotype
    while g.parent:
        steps[:0] = [m for m in g.morphs if m[0] != "reignite"]
        if g.parent not in lineage:
            raise SpecError(f"genotype {g.tag}: its parent {g.parent!r} is not in the run")
        g = lineage[g.parent]
    steps[:0] = [m for m in g.morphs if m[0] != "reignite"]
    serial_steps = [m for m in steps if m[0] in ("swap", "expand")]
    if str(spnas.morphed_serial(spnas.Serial.parse(g.serial), serial_steps)) != genotype.serial:
        raise SpecError(f"genotype {genotype.tag}: its lineage from {g.serial} does not lead to {genotype.serial}")
    return spnas.Genotype(**{**genotype.__dict__, "parent": "", "morphs": tuple(steps)})


def train_detector(detector: ImageDetector, train, epochs: int, spec: ProxySpec, options, data_seed: int,
                   device="cpu") -> None:
    """SGD (spec's lr and batch size; options' momentum, weight decay), the learning rate on a
    per-step cosine from `lr` to `lr_min`."""
    o = options
    optimizer = torch.optim.SGD(detector.parameters(), lr=spec.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    steps_per_epoch = math.ceil(min(len(train), spec.max_train_samples or len(train)) / spec.batch_size)
    total, step = max(1, epochs * steps_per_epoch), 0
    precision = training_precision(device, spec.amp)
    detector.train()
    for epoch in range(epochs):
        for batch in train.batches(spec.batch_size, True, data_seed * 1000 + epoch, device,
                                   limit=spec.max_train_samples):
            loss = sum(detector.loss_from_batch(precision.forward(detector, batch), batch).values())
            sgd_step(optimizer, loss, cosine(step, total, spec.lr, o.lr_min), f"epoch {epoch + 1}", precision)
            step += 1
    detector.eval()


def evaluate(genotype, spec: ProxySpec, cache_path, seed: int = 0, data_seed: int = 0, weights_dir=None,
             options=None, device="cpu") -> TrialResult:
    """The reward of one candidate: inherit, train briefly (or reignite), score on meta-val, and
    leave its weights in `weights_dir/<tag>.pt`. `seed` draws new layers and the batch order (with
    `data_seed`, the run's). A diverging candidate is a failed trial."""
    from . import reward_kind

    started = time.perf_counter()
    options = options or validate(MorphismOptions, spec.morphism, "proxy spec field 'morphism'")
    train, val = open_split(str(cache_path), "train"), open_split(str(cache_path), "val")
    if "images" not in train.levels:
        raise SpecError(f"{cache_path}: sp-nas trains on image crops; build the cache with --levels images")
    ckpt = baseline_of(cache_path)
    torch.manual_seed(seed)
    reignite = bool(genotype.morphs) and genotype.morphs[-1][0] == "reignite"
    if reignite:  # the pre-training again, on this architecture: fresh weights, the baseline's schedule
        backbone = spnas.build_backbone(genotype)
        detector = ImageDetector(backbone, _decoder(ckpt, backbone.out_channels))
        epochs = options.reignite_epochs or ckpt["config"].get("epochs", 12)
    else:
        detector = inherit(genotype, ckpt, weights_dir)
        epochs = spec.epochs
    measured = image_detector_cost(detector, train.crop)
    detector = detector.to(device)
    try:
        train_detector(detector, train, epochs, spec, options, data_seed * 1_000_003 + seed, device)
        keep_every_box(detector.decoder)
        losses, ap = score(detector, val, spec, reward_kind(spec) == "ap", device)
    except TRIAL_ERRORS as e:
        return failure(e, started, measured)
    result = outcome(losses, ap, reward_kind(spec), started, measured)
    if result.status == "done" and genotype.tag != "start":  # (the control's weights are never a parent)
        _save_once(Path(weights_dir) / f"{genotype.tag}.pt", genotype, detector)
    return result


def _save_once(path: Path, genotype, detector: ImageDetector) -> None:
    if path.is_file():
        return
    with written_whole(path) as tmp:
        torch.save({"genotype": genotype.to_json(), "model": detector.state_dict()}, tmp)


def trial(spec: ProxySpec, cache, run_dir, seed: int, device: str, **_) -> TrialSetup:
    """Candidates pass their weights to their children through files in RUN/weights."""
    weights = Path(run_dir) / "weights"
    weights.mkdir(exist_ok=True)
    return TrialSetup(partial(evaluate, weights_dir=weights, device=device), writable={"run folder": weights})


def start_control(spec: ProxySpec, cache) -> spnas.Genotype:
    """The network the search grows from, trained as briefly as a candidate."""
    return start_genotype(baseline_of(cache))


def morphism_options(spec: ProxySpec, cache, trials: int, lam=None) -> dict:
    return {**spec.morphism, "trials": trials, "start": start_genotype(baseline_of(cache)).to_json()}


def lineage_start(store):
    """A grown backbone is retrained from the baseline's weights, like the control: its genotype
    with the morphs of its whole lineage (every trial of the run, by tag)."""
    lineage = {g.tag: g for g in (spnas.Genotype.from_json(t.genotype, f"trial {t.id}") for t in store.trials(control=False))}
    return lambda genotype: from_baseline(genotype, lineage)


def baseline_backbone_state(genotype: spnas.Genotype, checkpoint) -> dict:
    """The baseline's backbone weights carried through the genotype's morphs."""
    from ..runtime import load_checkpoint

    return inherit(genotype, load_checkpoint(checkpoint), None).backbone.state_dict()


def trajectory_panel(run_dir, out_dir=None) -> dict:
    """The accepted steps of the search (its trajectory, the paper's Figure 3) as a table and a figure."""
    from ..report import trajectory, trajectory_figure

    steps = trajectory(run_dir)
    figure = trajectory_figure(run_dir, steps, Path(out_dir or run_dir) / "trajectory.png")
    rows = [(s["trial"], s["step"], s["arch"], "" if s["reward"] is None else f"{s['reward']:.4f}") for s in steps]
    return {"trajectory": steps,
            "tables": {"accepted steps (the search's trajectory)": (["trial", "step", "architecture", "reward"], rows)},
            "figures": {"trajectory: every candidate's AP and the accepted steps": str(figure)}}


METHOD = Method(name="sp-nas", space=spnas, strategy=MorphismStrategy, proxy="sp-nas", reward="ap", cache=IMAGES,
                control=start_control, trial=trial, options=morphism_options, promoted=lineage_start,
                backbone_state=baseline_backbone_state, random_search=False, scores_any_genotype=False,
                panels=trajectory_panel, sections={"morphism": MorphismOptions})
