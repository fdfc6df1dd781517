"""Does path-wise supernet training learn at our scale? (`make bench-supernet`, after `make sp-nas-demo`.)

DetNAS's supernet (the `detnas` CPU spec's layout) is trained by the classification proxy of its
pre-training phase (object crops of meta-train, `nascli.supernet`), with the same optimiser,
learning rate and step count, under different path samplers:

- fixed: always the ShuffleNetV2 path (every block 3×3), i.e. a plain network;
- one random block: the middle block's choice sampled, the rest 3×3;
- random {3×3, 5×5}: two shuffle kernels, sampled per block;
- random (the paper): every block's choice sampled uniformly, one path per step;
- random, identical choices: every choice a 3×3 block, independently initialised;
- fair: each step averages 4 paths in which every block uses every choice once (FairNAS);
- random at a lower lr (0.01), for 3× the epochs, and with AdamW (lr 2e-3, 6× the epochs).

Reported per sampler: training loss and accuracy of the last epoch (chance: ln 4 = 1.39 and 0.25
for the synthetic default's 4 classes) and meta-val accuracy of 10 random paths and of the 3×3 path
(BatchNorm on batch statistics). `python -m benchmarks.bench_supernet --cache <images cache>`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from nascli.trial import cosine, sgd_step
from nascli.config import ProxySpec, load_spec, resolve_proxy
from nascli.trial import open_split
from nascli.spaces import detnas
from nascli.methods.detnas import SupernetDetector, options_of, pretrain_logits, supernet_optimizer

CHOICES = len(detnas.CHOICES)


def samplers(blocks: int, rng) -> dict:
    uniform = lambda: [tuple(int(c) for c in rng.integers(CHOICES, size=blocks))]  # noqa: E731

    def one_block():
        path = [0] * blocks
        path[blocks // 2] = int(rng.integers(CHOICES))
        return [tuple(path)]

    def fair():
        perms = np.stack([rng.permutation(CHOICES) for _ in range(blocks)], 1)
        return [tuple(int(c) for c in row) for row in perms]

    return {"fixed": lambda: [(0,) * blocks], "one random block": one_block,
            "random {3x3, 5x5}": lambda: [tuple(int(c) for c in rng.integers(2, size=blocks))],
            "random (paper)": uniform, "random, identical choices": uniform, "fair (4 paths)": fair,
            "random, lr 0.01": uniform, "random, 3x epochs": uniform, "random, AdamW, 6x epochs": uniform}


def identical_choices(model) -> None:
    """Every choice of every block becomes a 3×3 shuffle block with its own initialisation."""
    for choices in model.supernet.blocks:
        for c in range(1, CHOICES):
            choices[c] = copy.deepcopy(choices[0])
            for m in choices[c].modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()


def accuracy(model, split, paths, o) -> float:
    right = total = 0
    with torch.no_grad():
        for path in paths:
            for batch in split.batches(o.batch_size, False):
                logits, labels = pretrain_logits(model, split, batch, path, o)
                if logits is not None:
                    right += int((logits.argmax(1) == labels).sum())
                    total += len(labels)
    return right / max(1, total)


def train(name, sampler, spec, train_split, val_split, epochs, lr, seed) -> dict:
    o = options_of(spec)
    torch.manual_seed(seed)
    model = SupernetDetector(o, len(train_split.classes), spec.width)
    if name == "random, identical choices":
        identical_choices(model)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4) if "AdamW" in name
                 else supernet_optimizer(model, o))
    per_epoch = math.ceil(len(train_split) / o.batch_size)
    started, history, step = time.perf_counter(), [], 0
    model.train()
    for e in range(epochs):
        losses, right, seen = [], 0, 0
        for batch in train_split.batches(o.batch_size, True, seed * 1000 + e):
            outs = [pretrain_logits(model, train_split, batch, p, o) for p in sampler()]
            if outs[0][0] is None:
                continue
            loss = sum(torch.nn.functional.cross_entropy(lg, lb) for lg, lb in outs) / len(outs)
            sgd_step(optimizer, loss, cosine(step, epochs * per_epoch, lr), name)
            step += 1
            losses.append(loss.item())
            right += sum(int((lg.argmax(1) == lb).sum()) for lg, lb in outs)
            seen += sum(len(lb) for _, lb in outs)
        history.append({"epoch": e + 1, "loss": float(np.mean(losses)), "accuracy": right / seen})
    blocks = model.supernet.spec.blocks()
    rng = np.random.default_rng(seed + 1)
    random_paths = [tuple(int(c) for c in rng.integers(CHOICES, size=blocks)) for _ in range(10)]
    return {"sampler": name, "epochs": epochs, "lr": lr, "steps": step, "history": history,
            "val_accuracy_random_paths": accuracy(model, val_split, random_paths, o),
            "val_accuracy_3x3_path": accuracy(model, val_split, [(0,) * blocks], o),
            "seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--spec", default="detnas")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/supernet.json")
    args = parser.parse_args()
    spec = load_spec(ProxySpec, resolve_proxy(args.spec))
    o = options_of(spec)
    train_split, val_split = open_split(args.cache, "train"), open_split(args.cache, "val")
    rows = []
    for name, sampler in samplers(o.space_spec().blocks(), np.random.default_rng(args.seed)).items():
        epochs = args.epochs * (3 if "3x epochs" in name else 6 if "6x epochs" in name else 1)
        lr = 0.01 if "lr 0.01" in name else 2e-3 if "AdamW" in name else o.lr
        r = train(name, sampler, spec, train_split, val_split, epochs, lr, args.seed)
        rows.append(r)
        last = r["history"][-1]
        print(f"{name:<27} {r['steps']:>4} steps  loss {last['loss']:.3f}  train acc {last['accuracy']:.3f}  "
              f"val acc: random paths {r['val_accuracy_random_paths']:.3f}, 3x3 path {r['val_accuracy_3x3_path']:.3f}"
              f"  {r['seconds']:.0f} s", flush=True)
    Path(args.out).write_text(json.dumps({"spec": args.spec, "chance": 1 / len(train_split.classes), "rows": rows},
                                         indent=1))


if __name__ == "__main__":
    main()
