"""Training the FCOS baseline from images: SGD with warm-up, a checkpoint every epoch, resume."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data.coco import CocoDetection, Transform
from .errors import CheckpointError, DataError, NascliError, SpecError
from .models.backbones import build_backbone
from .models.detector import FCOS, FCOSDecoder
from .runtime import load_checkpoint, resolve_device, save_checkpoint, seed_everything, sub_state

SIZE_DIVISOR = 32


class TrainingDiverged(NascliError):
    """The loss became NaN or infinite, or (a watched baseline) rose far above its best."""


#: A watched run stops when its classification loss stays this many times above its best epoch ...
DIVERGENCE_FACTOR = 3.0
#: ... for this many epochs in a row (one bad epoch can be noise; two are a trend).
DIVERGENCE_EPOCHS = 2
#: A baseline whose recorded AP (0..1) is below this learned nothing worth caching or searching.
NOTHING_LEARNED_AP = 0.01
#: Training images a baseline without `val` is scored on (evenly spread over its json).
SCORED_TRAINING_IMAGES = 100


def diverging(history: list[dict], factor: float = DIVERGENCE_FACTOR, epochs: int = DIVERGENCE_EPOCHS) -> str | None:
    """Why the run diverged (one clause), or None: its last `epochs` epochs' mean classification
    losses all exceed `factor` times the best epoch before them."""
    cls = [h["cls"] for h in history]
    if len(cls) <= epochs:
        return None
    best = min(range(len(cls) - epochs), key=cls.__getitem__)
    recent = cls[-epochs:]
    if not all(v > factor * cls[best] for v in recent):
        return None
    return (f"classification loss rose from {cls[best]:.2f} (epoch {best + 1}) to "
            f"{', '.join(f'{v:.2f}' for v in recent)} (epochs {len(cls) - epochs + 1}-{len(cls)}), "
            f"over {factor:g}x its best")


def learned_nothing(ckpt: dict) -> str | None:
    """Why a baseline checkpoint is not worth caching or searching (one clause), or None: it
    diverged, stopped before its last epoch, or scored ~0 AP where it was scored."""
    if ckpt.get("diverged"):
        return f"its training diverged ({ckpt['diverged']})"
    planned = ckpt.get("config", {}).get("epochs")
    if isinstance(planned, int) and ckpt["epoch"] < planned:
        return f"its training stopped at epoch {ckpt['epoch']} of {planned} (`nascli train --resume` finishes it)"
    scored = ckpt.get("evaluation")
    if isinstance(scored, dict) and isinstance(scored.get("AP"), (int, float)) and scored["AP"] < NOTHING_LEARNED_AP:
        return (f"it scored {100 * scored['AP']:.1f} AP on {scored['images']} {scored['split']} images: "
                f"its backbone learned nothing worth searching on")
    return None


def score(model, config: TrainConfig, device) -> dict:
    """The trained baseline's AP on `config.val`, else on up to SCORED_TRAINING_IMAGES training
    images: what `cache-features` and `search` check before they build on its backbone."""
    from .evaluate import coco_ap, dataset_detections

    transform = Transform(config.min_size, config.max_size)
    if config.val:
        dataset, split = CocoDetection(config.val, None, transform), "meta-val"
    else:
        dataset, split = CocoDetection(config.data, config.image_dir, transform), "training"
        step = max(1, len(dataset.image_ids) // SCORED_TRAINING_IMAGES)
        dataset.image_ids = dataset.image_ids[::step][:SCORED_TRAINING_IMAGES]
    detections = dataset_detections(model, dataset, device)
    ap = coco_ap(dataset.coco, detections, image_ids=dataset.image_ids)
    return {"split": split, "data": str(config.val or config.data), "images": len(dataset.image_ids),
            "AP": ap["AP"], "AP50": ap["AP50"]}


def collate(batch):
    """Stacks CHW images zero-padded (bottom/right) to a common size divisible by 32."""
    h = max(x.shape[1] for x, _ in batch)
    w = max(x.shape[2] for x, _ in batch)
    h, w = (math.ceil(v / SIZE_DIVISOR) * SIZE_DIVISOR for v in (h, w))
    images = np.zeros((len(batch), 3, h, w), dtype=np.float32)
    for i, (x, _) in enumerate(batch):
        images[i, :, :x.shape[1], :x.shape[2]] = x
    return torch.from_numpy(images), [t for _, t in batch]


def padded_size(transform, width: float, height: float) -> tuple[int, int]:
    """(height, width) an image of that size becomes: resized by `transform`, then padded by
    `collate` to a multiple of SIZE_DIVISOR (what a detector runs on at batch 1)."""
    scale = transform.scale_for(width, height)
    return tuple(math.ceil(round(v * scale) / SIZE_DIVISOR) * SIZE_DIVISOR for v in (height, width))


def lr_at(it: int, total: int, base: float, warmup: int, start: float = 0.001) -> float:
    """Linear warm-up from base·start over `warmup` iterations, then cosine decay to zero."""
    if it < warmup:
        return base * (start + (1 - start) * it / warmup)
    progress = (it - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_iterations(config: TrainConfig, steps_per_epoch: int) -> int:
    """`warmup_iters`, or with `warmup_fraction` that share of the schedule, floored at what the
    first epoch needs: its steps, but at most a third of the schedule (a 1-epoch grid run still
    reaches its peak) and at most FCOS's 500 iterations."""
    if config.warmup_fraction is None:
        return config.warmup_iters
    total = steps_per_epoch * config.epochs
    return max(math.ceil(config.warmup_fraction * total), min(steps_per_epoch, total // 3, 500))


def model_args(config: TrainConfig, num_classes: int) -> dict:
    """The plain arguments `build_detector` needs; checkpoints store them to rebuild the model."""
    return {"num_classes": num_classes, "backbone": config.backbone, "frozen_bn": config.frozen_bn,
            "width": config.width, "num_convs": config.num_convs, "genotype": config.genotype,
            "head_width": config.head_width, "deep_supervision": config.deep_supervision}


def build_detector(args: dict, weights=None) -> FCOS:
    """The detector `model_args` describe: the hand-designed FPN + FCOS head, or the decoder of
    any space's genotype (retraining a search's winners) on the same backbone."""
    from .spaces import build_backbone as build_searched_backbone
    from .spaces import load_genotype, searches_backbone

    genotype = load_genotype(args["genotype"]) if args.get("genotype") else None
    if genotype is not None and searches_backbone(genotype):  # a searched backbone under an FPN + FCOS head
        backbone = build_searched_backbone(genotype)
        return FCOS(backbone, FCOSDecoder(backbone.out_channels, args["num_classes"], width=args["width"],
                                          num_convs=args["num_convs"]))
    net = build_backbone(args["backbone"], weights, args.get("frozen_bn", False))
    return FCOS(net, detector_decoder(args, net.out_channels, genotype))


def detector_decoder(args: dict, in_channels: dict, genotype=None):
    """The decoder `build_detector` puts on a fixed backbone of `in_channels`: `genotype`'s, or the
    hand design `args` describe when None (the latency table traces it alone, on the backbone's
    features computed once)."""
    from .spaces import build_decoder, fpn_fcos

    if genotype is None and not args.get("head_width") and not args.get("deep_supervision"):
        return FCOSDecoder(in_channels, args["num_classes"], width=args["width"], num_convs=args["num_convs"])
    decoder = build_decoder(genotype or fpn_fcos.Genotype(num_convs=args["num_convs"]), in_channels,
                            args["num_classes"], args["width"], args.get("head_width"))
    if args.get("deep_supervision"):
        if getattr(decoder, "stages", 1) < 2:
            raise SpecError("deep_supervision: needs a decoder of stacked pyramids (a nas-fpn genotype "
                            "with repeats >= 2)")
        decoder.deep_supervision = True
    return decoder


def init_backbone(model: FCOS, checkpoint, genotype=None) -> None:
    """Starts `model`'s backbone from `checkpoint`: the baseline's backbone (a nascli checkpoint),
    or, for a searched backbone (`genotype`), what its method's `backbone_state` makes of that file
    (SP-NAS: the baseline's weights carried by its morphs; DetNAS: its path of the supernet)."""
    from .spaces import searches_backbone

    if genotype is not None and searches_backbone(genotype):
        from .methods import for_space

        model.backbone.load_state_dict(for_space(genotype.space).backbone_state(genotype, checkpoint))
        return
    ckpt = load_checkpoint(checkpoint)
    state = sub_state(ckpt["model"], "backbone.")
    try:
        model.backbone.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{checkpoint}: its backbone '{ckpt['model_args']['backbone']}' does not fit "
                              f"this model's backbone") from None


def train(config: TrainConfig, resume: bool = False, on_progress=None) -> dict:
    """Trains and returns {checkpoint, epochs, history}. `on_progress(dict)` is called every step.

    Checkpoints go to `<out>/last.pt` after every epoch (atomically); `resume=True` continues from
    it with the same config, data order and learning-rate schedule as an uninterrupted run.
    """
    out = Path(config.out)
    last = out / "last.pt"
    device = resolve_device(config.device)
    seed_everything(config.seed)
    transform = Transform(config.min_size, config.max_size, config.crop, config.flip)
    dataset = CocoDetection(config.data, config.image_dir, transform, seed=config.seed)
    if not dataset.coco.anns:
        raise DataError(f"{config.data}: field 'annotations' is empty; nothing to train on")
    dataset.audit().raise_if_unusable()  # a corrupt photo stops the run now, not an hour in
    model = build_detector(model_args(config, len(dataset.class_ids)), config.weights)
    if config.init_from and not (resume and last.is_file()):
        from .spaces import load_genotype

        init_backbone(model, config.init_from, load_genotype(config.genotype) if config.genotype else None)
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
                 if config.optimizer == "adamw" else
                 torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay))
    start_epoch, history = 0, []
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history = ckpt["epoch"], list(ckpt["history"])
    elif resume:
        raise NascliError(f"{last}: nothing to resume (no checkpoint in {out})")

    steps = math.ceil(len(dataset) / config.batch_size)
    total = steps * config.epochs
    warmup = warmup_iterations(config, steps)
    classes = {"ids": dataset.class_ids, "names": dataset.class_names}
    train_images = dataset.image_files()  # so a cache or a test split can prove it never saw them
    for epoch in range(start_epoch, config.epochs):
        dataset.epoch = epoch
        order = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(dataset, config.batch_size, shuffle=True, generator=order,
                                             collate_fn=collate, num_workers=config.workers)
        model.train()
        for p in backbone_params:  # frozen while a new decoder learns on fixed features (LP-FT)
            p.requires_grad_(epoch >= config.frozen_backbone_epochs)
        sums, started = {}, time.perf_counter()
        for step, (images, targets) in enumerate(loader):
            it = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(it, total, config.lr, warmup, config.warmup_start)
            losses = model.loss(model(images.to(device)), targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                reason = f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}"
                if config.watch and last.is_file():  # so that nothing builds on it, nor resumes into it silently
                    save_checkpoint({**load_checkpoint(last), "diverged": reason}, last)
                raise TrainingDiverged(f"{config.out}: {reason}; lower --lr or raise --warmup-iters")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 35.0)  # mmdetection's FCOS setting
            optimizer.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().item()
            if on_progress:
                on_progress({"epoch": epoch + 1, "epochs": config.epochs, "step": step + 1,
                             "steps": steps, "loss": loss.detach().item(), "lr": optimizer.param_groups[0]["lr"]})
        history.append({"epoch": epoch + 1, "seconds": time.perf_counter() - started,
                        **{k: v / steps for k, v in sums.items()}})
        diverged = diverging(history) if config.watch else None
        payload = {"kind": "fcos", "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "epoch": epoch + 1, "history": history, "config": config.model_dump(),
                   "model_args": model_args(config, len(dataset.class_ids)), "classes": classes,
                   "genotype": config.genotype, "train_images": train_images, "diverged": diverged}
        save_checkpoint(payload, last)
        if diverged:
            raise TrainingDiverged(f"{last}: {diverged}: the rate is too high for this data; lower --lr, or "
                                   f"let `nascli train --lr-grid default --val META-VAL.json` choose it")
    if config.watch:
        ckpt = load_checkpoint(last)
        if not isinstance(ckpt.get("evaluation"), dict):  # (a finished run resumed keeps its score)
            model.eval()
            save_checkpoint({**ckpt, "evaluation": score(model, config, device)}, last)
            ckpt = load_checkpoint(last)
        evaluation = ckpt["evaluation"]
    return {"checkpoint": str(last), "epochs": config.epochs, "history": history,
            "device": str(device), "train_seconds": sum(h["seconds"] for h in history),
            "evaluation": evaluation if config.watch else None}


def train_with_grid(config: TrainConfig, grid, grid_epochs: int | None = None, on_progress=None) -> dict:
    """`train --lr-grid`: the baseline's recipe chosen on meta-val, as promotion chooses each
    architecture's. Every (optimizer, rate) point of `grid` trains `grid_epochs` (default a third
    of the schedule) into `<out>/grid/<point>` and is scored on `config.val`; the best point (a
    point that diverged scores nothing) then trains the whole schedule into `<out>`. A rerun
    reuses every finished run. Returns train's summary with `grid` {point: AP or None} and `chosen`."""
    import json

    from .retrain import point_label, recipe_key

    if not config.val:
        raise SpecError("--lr-grid: give --val META-VAL.json: the grid chooses the recipe on meta-val")
    if not config.watch:
        raise SpecError("--lr-grid: needs the baseline's scoring (watch: true)")
    out, grid_epochs = Path(config.out), grid_epochs or max(1, config.epochs // 3)
    scores = {}
    for optimizer, lr in grid:
        label = point_label(optimizer, lr)
        point = config.model_copy(update={"out": str(out / "grid" / label.replace(":", "-")), "epochs": grid_epochs,
                                          "lr": lr, "optimizer": optimizer})
        progress = (lambda e, label=label: on_progress({**e, "point": label})) if on_progress else None
        try:
            scores[label] = _finished(point, recipe_key, progress)["AP"]
        except TrainingDiverged:
            scores[label] = None
    scored = {k: v for k, v in scores.items() if v is not None}
    if not scored:
        raise TrainingDiverged(f"{out}: every point of --lr-grid diverged ({', '.join(scores)}); try lower rates")
    chosen = max(scored, key=scored.get)  # a tie: the first in grid order
    optimizer, lr = dict((point_label(o, r), (o, r)) for o, r in grid)[chosen]
    final = config.model_copy(update={"lr": lr, "optimizer": optimizer})
    summary = {"grid_epochs": grid_epochs, "grid": scores, "chosen": chosen,
               "split": "meta-val", "val": config.val}
    (out / "grid").mkdir(parents=True, exist_ok=True)
    (out / "grid" / "choice.json").write_text(json.dumps(summary, indent=1) + "\n")
    evaluation = _finished(final, recipe_key, on_progress)
    ckpt = load_checkpoint(out / "last.pt")
    return {"checkpoint": str(out / "last.pt"), "epochs": final.epochs, "history": ckpt["history"],
            "device": str(resolve_device(config.device)), "train_seconds": sum(h["seconds"] for h in ckpt["history"]),
            "evaluation": evaluation, **summary}


def _finished(config: TrainConfig, recipe_key, on_progress) -> dict:
    """The run's recorded evaluation, training it first (or resuming it) unless it is finished;
    a run folder left by another recipe is an error, not a silent resume."""
    last = Path(config.out) / "last.pt"
    if last.is_file():
        ckpt = load_checkpoint(last)
        if recipe_key(TrainConfig(**ckpt["config"])) != recipe_key(config):
            raise SpecError(f"{last}: trained with another recipe than this --lr-grid point asks; "
                            f"give another --out")
        if ckpt.get("diverged"):
            raise TrainingDiverged(f"{last}: {ckpt['diverged']}")
        if isinstance(ckpt.get("evaluation"), dict):
            return ckpt["evaluation"]
    return train(config, resume=last.is_file(), on_progress=on_progress)["evaluation"]
