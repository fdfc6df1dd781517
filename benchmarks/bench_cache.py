"""One epoch of one fixed decoder (FPN + FCOS head) trained from the feature cache vs from images
through the frozen backbone, on the same crops; and the cache loader's share of a training step."""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nascli.data.coco import CocoDetection
from nascli.data.split import split_coco
from nascli.data.synth import make_synthetic
from nascli.cache import (
    CachedSplit,
    build_cache,
    crop_sample,
    crop_transform,
    to_chw_array,
)
from nascli.models.backbones import build_backbone
from nascli.models.detector import FCOSDecoder

# The decoder at the NAS-FCOS search width (64) with the FCOS head depth (4).
IMAGES, CROP, BATCH, WIDTH, NUM_CONVS = 96, 256, 16, 64, 4


def _decoder(in_channels, num_classes, seed=0):
    torch.manual_seed(seed)
    decoder = FCOSDecoder(in_channels, num_classes, width=WIDTH, num_convs=NUM_CONVS)
    return decoder, torch.optim.Adam(decoder.parameters(), 1e-3)


def _step(decoder, optimizer, outputs_fn, loss_fn):
    loss = sum(loss_fn(outputs_fn()).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def epoch_from_cache(cache_path, num_classes):
    """Returns (epoch seconds, seconds spent waiting on the loader)."""
    with CachedSplit(cache_path, "train") as split:
        decoder, opt = _decoder(split.in_channels(), num_classes)
        waiting, started = 0.0, time.perf_counter()
        batches = split.batches(BATCH, shuffle=True, seed=0)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            waiting += time.perf_counter() - t
            if batch is None:
                break
            _step(decoder, opt, lambda: decoder(batch),
                  lambda out: decoder.loss_from_targets(out, batch["labels"], batch["ltrb"], batch["ctr"]))
        return time.perf_counter() - started, waiting


def epoch_from_images(data, backbone_net, num_classes):
    """The uncached pipeline: read + crop each image, run the frozen backbone, then the decoder."""
    ds = CocoDetection(data, transform=crop_transform(CROP))
    decoder, opt = _decoder(backbone_net.out_channels, num_classes)
    order = np.random.default_rng(0).permutation(len(ds))
    started = time.perf_counter()
    for lo in range(0, len(ds), BATCH):
        samples = [crop_sample(ds, int(s), 1, 0, CROP) for s in order[lo:lo + BATCH]]
        images = torch.from_numpy(np.stack([to_chw_array(img) for _, img, _, _ in samples]))
        targets = [{"boxes": b, "labels": lab} for _, _, b, lab in samples]
        with torch.no_grad():
            feats = backbone_net(images)
        _step(decoder, opt, lambda: decoder(feats), lambda out: decoder.loss(out, targets))
    return time.perf_counter() - started


def rows():
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        instances = make_synthetic(tmp / "synth", IMAGES + 8, CROP, 4, seed=0)
        split_coco(instances, tmp / "train.json", tmp / "val.json", val=8, seed=0)
        for name in ("resnet18", "resnet50"):
            net = build_backbone(name).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            torch.save(net.body.state_dict(), tmp / f"{name}.pth")  # random weights: timing only
            built = build_cache(tmp / "train.json", tmp / "val.json", out_dir=tmp / "cache", backbone=name,
                                weights=tmp / f"{name}.pth", crop=CROP, levels=("c3", "c4", "c5"),
                                device="cpu")
            cached, waiting = epoch_from_cache(built["path"], 4)
            uncached = epoch_from_images(tmp / "train.json", net, 4)
            out.append((name, uncached, cached, waiting / cached))
    return out
