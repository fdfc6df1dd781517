"""The `nascli` command line: each command validates its options, makes ONE library call, prints.

Heavy imports (torch, numba, h5py) happen inside the commands so that `nascli --help` is instant.
`main()` turns a NascliError into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .errors import NascliError, SpecError

WEIGHTS_HELP = ("none | default | a torchvision weights name (IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1, "
                "read from or fetched into $TORCH_HOME) | a local state_dict file")

app = typer.Typer(help="Search object-detector necks, heads and backbones for your own dataset.",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False)
data_app = typer.Typer(help="Prepare datasets: synthesise, convert, split, inspect.", no_args_is_help=True)
app.add_typer(data_app, name="data")

# Tables piped into a log would be cut to 80 columns; give them room when stdout is not a terminal.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)

# Options shared by several commands, declared once.
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="CPU threads for torch (default: the cores this process "
                                                            "may use that other jobs leave free).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Build on a baseline that diverged, stopped early or scored ~0 AP anyway.")]
ImageDirOpt = Annotated[Path | None, typer.Option(
    "--image-dir", help="Folder of the images (default: recorded in the json, else images/ beside it).")]


def _emit_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _use_threads(threads: int | None, workers: int | None = None) -> None:
    """Sets torch's threads before a long job; a capped default, an oversubscribing --threads or more
    local --workers than threads is said in one line each (stderr, so --json output stays clean)."""
    from .runtime import use_threads, workers_note

    chosen, note = use_threads(threads)
    for line in (note, workers_note(workers, chosen)):
        if line:
            err_console.print(line, highlight=False, soft_wrap=True)


@contextmanager
def _progress(description: str, enabled: bool = True, unit: str | None = None):
    """A rich progress bar with ETA; yields the `on_progress(dict)` callback library calls take.
    Where stderr is not a terminal (a log), one line per finished `unit` instead (log_progress.py)."""
    if enabled and not err_console.is_terminal:
        from .log_progress import LogProgress

        yield LogProgress(description, lambda line: err_console.print(line, highlight=False, soft_wrap=True), unit)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err_console, disable=not enabled, transient=False)
    task = None  # added on the first event, so an error raised before any work shows no bar

    def update(event: dict):
        """event: step, steps (and epoch/epochs for training) plus any fields to show."""
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=None, info="")
        total = event.get("steps", 1) * event.get("epochs", 1)
        done = (event.get("epoch", 1) - 1) * event.get("steps", 1) + event["step"]
        info = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in event.items() if k not in ("step", "steps", "epochs"))
        progress.update(task, total=total, completed=done, info=info)

    with progress:
        yield update


def _table(title: str, columns, rows):
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("class", "metric", "field", "arch", "run", "status")
                         else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    console.print(table)


# ---------------------------------------------------------------- data


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Output folder (images/ + instances.json).")] = Path("data/synth"),
    images: Annotated[int, typer.Option(min=1, help="Number of images.")] = 660,
    size: Annotated[int, typer.Option(min=32, help="Image side in pixels.")] = 128,
    classes: Annotated[int, typer.Option(min=1, max=8, help="Number of shape classes (1-8).")] = 4,
    max_objects: Annotated[int, typer.Option(min=1, help="Objects per image: 1..this.")] = 6,
    min_object: Annotated[float | None, typer.Option(min=1, help="Smallest object side in pixels (default: size/8).")] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
):
    """Generate the built-in synthetic shapes dataset (COCO format).

    Example: [cyan]nascli data synth --out data/synth --images 300 --size 256[/]
    """
    from .data.synth import make_synthetic

    path = make_synthetic(out, images, size, classes, max_objects, seed, min_object)
    _emit_json({"instances": str(path)}) if as_json else console.print(f"wrote {path}")


@data_app.command("convert-voc")
def data_convert_voc(
    root: Annotated[Path | None, typer.Argument(help="VOC root with Annotations/, JPEGImages/, ImageSets/.")] = None,
    out: Annotated[Path, typer.Option(help="Output COCO json.")] = Path("instances.json"),
    split: Annotated[str | None, typer.Option(help="ImageSets/Main/<split>.txt to convert (default: all XMLs).")] = None,
    images: Annotated[Path | None, typer.Option(help="Image folder (instead of ROOT/JPEGImages).")] = None,
    annotations: Annotated[Path | None, typer.Option(help="XML folder (instead of ROOT/Annotations).")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class order (default: sorted names).")] = None,
    as_json: JsonOpt = False,
):
    """Convert Pascal VOC XML to COCO json; degenerate boxes are skipped and counted.

    Example: [cyan]nascli data convert-voc ../shared/datasets/bccd/BCCD --split train --out data/bccd/train.json[/]
    """
    from .data.voc import convert_voc

    if root is None and (images is None or annotations is None):
        raise NascliError("convert-voc: give ROOT, or both --images and --annotations")
    summary = convert_voc(root, out, split, images, annotations,
                          [c.strip() for c in classes.split(",")] if classes else None)
    if as_json:
        return _emit_json(summary)
    console.print(f"wrote {summary['out']}: {summary['images']} images, {summary['annotations']} boxes, "
                  f"classes {summary['classes']}; skipped {summary['skipped_degenerate']} degenerate, "
                  f"clipped {summary['clipped']}")
    console.print(f"next: `nascli check {summary['out']}` decodes every image before a long job does", highlight=False)


@data_app.command("split")
def data_split(
    data: Annotated[Path, typer.Argument(help="COCO json to split.")],
    train_out: Annotated[Path, typer.Option("--train", help="Output meta-train json.")],
    val_out: Annotated[Path, typer.Option("--val", help="Output meta-val json.")],
    val_size: Annotated[float, typer.Option("--val-size", help="Fraction (<1) or count (>=1) of meta-val images.")] = 0.3,
    image_dir: ImageDirOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
):
    """Seeded meta-train / meta-val split (NAS-FCOS: 4000 / 1715 of VOC train).

    Example: [cyan]nascli data split data/synth/instances.json --train data/train.json --val data/val.json[/]
    """
    from .data.split import split_coco

    summary = split_coco(data, train_out, val_out, val_size, seed, image_dir)
    _emit_json(summary) if as_json else console.print(
        f"{summary['train_images']} meta-train images -> {train_out}, "
        f"{summary['val_images']} meta-val images -> {val_out}")


@data_app.command("stats")
def data_stats(data: Annotated[Path, typer.Argument(help="COCO json.")], as_json: JsonOpt = False):
    """Images, objects per class, and COCO small / medium / large counts.

    Example: [cyan]nascli data stats data/train.json[/]
    """
    from .data.coco import dataset_stats

    s = dataset_stats(data)
    if as_json:
        return _emit_json(s)
    rows = [(name, c["id"], c["objects"], c["small"], c["medium"], c["large"]) for name, c in s["classes"].items()]
    rows.append(("all", "", s["objects"], *(sum(c[k] for c in s["classes"].values())
                                          for k in ("small", "medium", "large"))))
    _table(f"{data}: {s['images']} images", ["class", "id", "objects", "small", "medium", "large"], rows)


@data_app.command("clean")
def data_clean(
    data: Annotated[Path, typer.Argument(help="COCO json to clean.")],
    out: Annotated[Path, typer.Option("--out", help="Cleaned COCO json (never the input).")],
    image_dir: ImageDirOpt = None,
    as_json: JsonOpt = False,
):
    """The dataset without what the commands cannot use: unreadable or truncated images dropped
    (listed), a declared size proportional to the decoded one rescaled, boxes clipped to the
    image and empty ones dropped; the new json records its image folder and EXIF convention.

    Example: [cyan]nascli data clean data/all.json --out data/all-clean.json[/]
    """
    from .data.audit import audit, clean

    r = clean(audit(data, image_dir), out)
    if as_json:
        return _emit_json(r)
    for d in r["dropped"]:
        console.print(f"dropped: {d['file']}: {d['why']}", highlight=False, soft_wrap=True)
    console.print(f"{r['images']} images, {r['annotations']} boxes -> {out} (dropped {len(r['dropped'])} images, "
                  f"{r['boxes_dropped']} empty boxes; rescaled {r['rescaled']} images; clipped {r['boxes_clipped']} boxes)",
                  soft_wrap=True)


# ---------------------------------------------------------------- training and evaluation


@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option(help="Training COCO json.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML train spec; options given here override it.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder for checkpoints.")] = None,
    backbone: Annotated[str | None, typer.Option(help="resnet18 | resnet34 | resnet50 | mobilenet_v2.")] = None,
    weights: Annotated[str | None, typer.Option(help=f"Backbone weights: {WEIGHTS_HELP}.")] = None,
    frozen_bn: Annotated[bool | None, typer.Option("--frozen-bn/--no-frozen-bn", help="Freeze backbone batch norm.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (FCOS's, the default) | adamw.")] = None,
    min_size: Annotated[int | None, typer.Option(help="Short side after resizing.")] = None,
    crop: Annotated[int | None, typer.Option(help="Random square crop for training (0 = none).")] = None,
    width: Annotated[int | None, typer.Option(help="FPN/head channels.")] = None,
    num_convs: Annotated[int | None, typer.Option(help="Head tower depth (FCOS: 4).")] = None,
    image_dir: ImageDirOpt = None,
    val: Annotated[Path | None, typer.Option(help="Meta-val COCO json: the finished baseline is scored on it (else on "
                                                  "up to 100 training images), and --lr-grid chooses on it.")] = None,
    lr_grid: Annotated[str | None, typer.Option(help="Choose the recipe on --val: points as retrain's --lr-grid (rates, "
                                                     "OPTIMIZER:RATE), 'default' for promotion's grid (SGD at FCOS's "
                                                     "rate, AdamW at three rates), e.g. default,0.02.")] = None,
    grid_epochs: Annotated[int | None, typer.Option(min=1, help="Epochs of each --lr-grid run (default: a third of the schedule).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <out>/last.pt.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for every random choice.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda.")] = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
):
    """Train the FCOS baseline (backbone + FPN + FCOS head) on full images. Its classification
    loss is watched (a run that diverges stops with one line) and the result is scored (AP on
    --val, else on training images) into the checkpoint, which cache-features and search check.

    Example: [cyan]nascli train --data data/train.json --backbone resnet18 --epochs 12 --out runs/baseline[/]
    Example: [cyan]nascli train --data data/train.json --val data/val.json --lr-grid default --out runs/baseline[/]
    """
    from .config import TrainConfig, load_spec
    from .train import train, train_with_grid

    overrides = {"data": str(data) if data else None, "out": str(out) if out else None, "val": str(val) if val else None,
                 "backbone": backbone, "weights": str(weights) if weights else None,
                 "frozen_bn": frozen_bn, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                 "min_size": min_size, "crop": crop, "width": width, "num_convs": num_convs,
                 "image_dir": str(image_dir) if image_dir else None, "seed": seed, "device": device}
    cfg = load_spec(TrainConfig, config, overrides)
    _use_threads(threads)
    with _progress("train", not as_json, "epoch") as on_progress:
        if lr_grid:
            summary = train_with_grid(cfg, _grid_points(lr_grid, cfg.batch_size), grid_epochs, on_progress)
        else:
            summary = train(cfg, resume=resume, on_progress=on_progress)
    if as_json:
        return _emit_json(summary)
    if lr_grid:
        _table(f"recipe grid: {summary['grid_epochs']} epochs a point, AP on {summary['val']} (meta-val)",
               ["point", "meta-val AP", ""],
               [(label, "diverged" if ap is None else f"{100 * ap:.1f}", "chosen" if label == summary["chosen"] else "")
                for label, ap in summary["grid"].items()])
    _table(f"trained {cfg.backbone} FCOS on {summary['device']} -> {summary['checkpoint']}",
           ["epoch", "seconds", "cls", "reg", "ctr"],
           [(h["epoch"], f"{h['seconds']:.0f}", f"{h['cls']:.3f}", f"{h['reg']:.3f}", f"{h['ctr']:.3f}")
            for h in summary["history"]])
    scored = summary["evaluation"]
    if scored:
        console.print(f"scored {100 * scored['AP']:.1f} AP ({100 * scored['AP50']:.1f} AP50) on {scored['images']} "
                      f"{scored['split']} images", highlight=False)


def _grid_points(text: str, batch_size: int) -> tuple:
    """train's --lr-grid: retrain's points, and 'default' for promotion's default grid."""
    from .retrain import default_grid, grid_point

    points = []
    for entry in (x.strip() for x in text.split(",") if x.strip()):
        points += default_grid(batch_size) if entry == "default" else [grid_point(entry)]
    if not points:
        raise SpecError(f"--lr-grid: '{text}' names no point")
    return tuple(dict.fromkeys(points))


ExitAfterOpt = Annotated[int | None, typer.Option(
    "--exit-after", min=1, help="Anytime detection: stop a stacked NAS-FPN after K pyramids.")]


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by train.")],
    data: Annotated[Path, typer.Option(help="COCO json to evaluate on.")],
    image_dir: ImageDirOpt = None,
    exit_after: ExitAfterOpt = None,
    all_exits: Annotated[bool, typer.Option("--all-exits", help="Evaluate every early exit K = 1..stages.")] = False,
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime: what the latency is timed under (AP is torch's; pip install 'nascli\\[deploy]' for onnxruntime).")] = "torch",
    latency_images: Annotated[int, typer.Option(min=1, help="Single images the latency is the median of (after 3 warm-up).")] = 30,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
):
    """COCO evaluation (pycocotools): AP, AP50, AP75, APs/m/l, params, FLOPs, latency per image.

    Example: [cyan]nascli eval runs/baseline/last.pt --data data/val.json[/]
    Example: [cyan]nascli eval runs/s1/retrain/zoo-nas-fpn/last.pt --data data/val.json --all-exits[/]
    """
    from .evaluate import METRICS, evaluate, stages_of

    _use_threads(threads)
    exits = list(range(1, stages_of(checkpoint) + 1)) if all_exits else [exit_after]
    results = []
    with _progress("eval", not as_json) as on_progress:
        for k in exits:
            results.append(evaluate(checkpoint, data, image_dir=image_dir, device=device, on_progress=on_progress,
                                    exit_after=k, runtime=runtime, latency_images=latency_images))
    if as_json:
        return _emit_json(results if all_exits else results[0])
    if all_exits:
        return _table(f"{checkpoint} on {data}: anytime detection", ["exit after", "AP", "AP50", "GFLOPs", "ms/img"],
                      [(r["exit_after"], f"{100 * r['AP']:.1f}", f"{100 * r['AP50']:.1f}",
                        f"{r['flops'] / 1e9:.2f}", f"{r['latency_ms']:.1f}") for r in results])
    r = results[0]
    rows = [(m, "n/a" if r[m] < 0 else f"{100 * r[m]:.1f}") for m in METRICS]
    rows += [("params", f"{r['params'] / 1e6:.2f} M"),
             ("FLOPs", f"{r['flops'] / 1e9:.2f} G at {r['flops_input'][0]}x{r['flops_input'][1]}"),
             ("latency", f"{r['latency_ms']:.1f} ms/image (median of {r['latency_images']}, quartiles "
                         f"{r['latency_p25_ms']:.1f}-{r['latency_p75_ms']:.1f}) on {r['device']}, {r['threads']} "
                         f"thread(s), {r['runtime']}")]
    _table(f"{checkpoint} on {data} ({r['images']} images)", ["metric", "value"], rows)


@app.command("predict")
def predict_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by train.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    out: Annotated[Path, typer.Option(help="Output folder for detections.json and PNGs.")] = Path("predictions"),
    score_thresh: Annotated[float, typer.Option(help="Minimum score to draw.")] = 0.3,
    exit_after: ExitAfterOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
):
    """Detect objects in images: COCO results json plus one PNG per image with boxes drawn.

    Example: [cyan]nascli predict runs/baseline/last.pt data/synth/images/000001.png --out preds/[/]
    """
    from .evaluate import predict

    r = predict(checkpoint, images, out, device=device, score_thresh=score_thresh, exit_after=exit_after)
    _emit_json(r) if as_json else console.print(f"{r['count']} detections -> {r['detections']}; "
                                                f"{len(r['images'])} images drawn in {out}")


# ---------------------------------------------------------------- feature cache


@app.command("cache-features")
def cache_features_cmd(
    data: Annotated[Path | None, typer.Option(help="Meta-train COCO json.")] = None,
    val: Annotated[Path | None, typer.Option(help="Meta-val COCO json.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Baseline checkpoint whose backbone to freeze.")] = None,
    backbone: Annotated[str | None, typer.Option(help="torchvision backbone (with --weights) instead.")] = None,
    weights: Annotated[str | None, typer.Option(help=f"Weights for --backbone: {WEIGHTS_HELP}.")] = None,
    crop: Annotated[int, typer.Option(help="Square crop side (multiple of 32).")] = 256,
    crops_per_image: Annotated[int, typer.Option(min=1, help="Random crops per image.")] = 1,
    min_size: Annotated[int | None, typer.Option(help="Short side before cropping (default: --crop).")] = None,
    levels: Annotated[str, typer.Option(help="Comma list of c2..c5, or 'images' for uint8 crops.")] = "c2,c3,c4,c5",
    out: Annotated[Path | None, typer.Option("--out", "--cache-dir", help="Cache folder (default $NASCLI_CACHE, then ./cache).")] = None,
    image_dir: ImageDirOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per backbone forward pass.")] = 16,
    verify_file: Annotated[Path | None, typer.Option("--verify", help="Check a cache file and exit.")] = None,
    info_file: Annotated[Path | None, typer.Option("--info", help="Describe a cache file and exit.")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Run the frozen backbone once per crop and store its features (+ FCOS targets) in HDF5.

    The file is named by a content key: the same request reuses it instantly.
    Example: [cyan]nascli cache-features --data data/train.json --val data/val.json --checkpoint runs/baseline/last.pt[/]
    Example: [cyan]nascli cache-features --info cache/<key>.h5[/]
    """
    from . import cache as feature_cache

    if verify_file is not None:
        r = feature_cache.verify(verify_file)
        return _emit_json(r) if as_json else console.print(f"{r['path']}: ok ({len(r['checked'])} datasets checked)")
    if info_file is not None:
        r = feature_cache.describe(info_file)
        return _emit_json(r) if as_json else _print_cache_info(r)
    if data is None or val is None:
        raise NascliError("cache-features: give --data and --val (or --verify / --info FILE)")
    with _progress("cache", not as_json) as on_progress:
        r = feature_cache.build_cache(data, val, out_dir=out, checkpoint=checkpoint, backbone=backbone,
                                      weights=weights, crop=crop, crops_per_image=crops_per_image,
                                      min_size=min_size, levels=tuple(levels.split(",")), image_dir=image_dir,
                                      batch_size=batch_size, device=device, seed=seed, on_progress=on_progress,
                                      force=force)
    if as_json:
        return _emit_json(r)
    console.print(("reused " if r["reused"] else "wrote ") + r["path"])
    _print_cache_info(r)


def _print_cache_info(r: dict) -> None:
    fields = r["key_fields"]
    rows = [("key", r["key"]), ("backbone", f"{fields['backbone']} (weights {fields['weights'][:12]})"),
            ("crop", f"{r['crop']} px, {fields['crops_per_image']} per image, short side {fields['min_size']}"),
            ("levels", ", ".join(r["levels"])), ("classes", ", ".join(r["classes"])),
            ("size on disk", f"{r['bytes'] / 2**20:.1f} MiB")]
    for split, s in r["splits"].items():
        shapes = "; ".join(f"{k} {'x'.join(map(str, v['shape'][1:]))} {v['dtype']}"
                           for k, v in s["fields"].items() if k in r["levels"])
        rows.append((split, f"{s['samples']} crops of {s['images']} images; {shapes}"))
    _table(r["path"], ["field", "value"], rows)


# ---------------------------------------------------------------- search and runs

runs_app = typer.Typer(help="Inspect search runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
RunArg = Annotated[Path, typer.Argument(help="Run folder (holds run.db).")]


@app.command("proxies")
def proxies_cmd(as_json: JsonOpt = False):
    """List the proxy specs `--proxy NAME` can name, and where each comes from (./proxies/ wins
    over the built-in of the same name).

    Example: [cyan]nascli proxies[/]
    """
    from .config import BUILTIN_PROXIES, ProxySpec, load_spec, proxy_specs

    rows = []
    for name, path in proxy_specs().items():
        origin = "built-in" if path.resolve().parent == BUILTIN_PROXIES.resolve() else "./proxies"
        rows.append({"name": name, "from": origin, "space": load_spec(ProxySpec, path).space, "path": str(path)})
    if as_json:
        return _emit_json(rows)
    _table("proxy specs", ["name", "space", "from", "path"],
           [(r["name"], r["space"], r["from"], r["path"]) for r in rows])


@app.command("profile")
def profile_cmd(
    cache: Annotated[Path, typer.Option(help="Feature cache of the search (its baseline gives the promoted shape; the table lives beside it).")],
    method: Annotated[str, typer.Option(help="Whose space's random decoders calibrate the table (with the control).")] = "nas-fcos",
    proxy: Annotated[str | None, typer.Option(help="Proxy spec of that space (default: the method's).")] = None,
    decoders: Annotated[int, typer.Option(min=0, help="Random decoders timed end to end beside the control.")] = 3,
    images: Annotated[int, typer.Option(min=5, help="Timed images per detector (median).")] = 30,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
):
    """Time every op a promoted detector runs on this machine, at this thread count: the table
    `search --latency-target` predicts candidates with (a search calibrates it itself the first time).

    Example: [cyan]nascli profile --cache cache/<key>.h5 --threads 2[/]
    """
    from .config import ProxySpec, load_spec, resolve_proxy
    from .latency_table import profile
    from .methods import default_proxy, lookup
    from .search import baseline_of
    from .spaces import space_for

    _use_threads(threads)
    spec = load_spec(ProxySpec, resolve_proxy(proxy or default_proxy(method)))
    entry = lookup(method, spec.space)
    r = profile(baseline_of(cache), cache.parent, entry.control(spec, cache), space_for(spec), decoders=decoders,
                images=images, seed=seed)
    if as_json:
        return _emit_json(r)
    _table(f"latency on {r['environment']['processor']}, {r['environment']['threads']} thread(s), "
           f"{r['input_size'][0]}x{r['input_size'][1]} images",
           ["detector", "ops", "sum of ops ms", "predicted ms", "measured ms"],
           [("control" if row["control"] else f"random decoder {k}", row["ops"], f"{row['sum_ms']:.1f}",
             f"{row['predicted_ms']:.1f}", f"{row['measured_ms']:.1f}") for k, row in enumerate(r["rows"])])
    console.print(f"table: {r['table']} ({r['keys']} op shapes); fit: {r['fit']['per_op'] * 1000:.1f} µs an op + "
                  f"{r['fit']['fixed']:.1f} ms")


@app.command("check")
def check_cmd(path: Annotated[Path, typer.Argument(help="Any file nascli reads, or a run folder.")],
              kind: Annotated[str | None, typer.Option(help="coco | voc | train-spec | proxy-spec | genotype | "
                                                             "checkpoint | cache | run (default: from the name).")] = None,
              image_dir: ImageDirOpt = None,
              as_json: JsonOpt = False):
    """Read a file the way the command that takes it would, before a long job: a bad one gives one
    line naming the file and the field (exit 2), and nothing on disk changes. A COCO json's images
    are all decoded (remembered per file, so a second check is quick): a file train, cache-features
    or eval would refuse exits 2; what they repair (EXIF orientation, modes, boxes) is a warning.

    Example: [cyan]nascli check data/train.json[/]
    Example: [cyan]nascli check runs/s1[/]
    """
    from .inputs import check

    r = check(path, kind, image_dir)
    if as_json:
        _emit_json(r)
    else:
        if "findings" in r:
            _print_findings(r)
        console.print(f"{r['path']}: {'ok' if not r.get('unusable') else 'NOT usable'} ({r['kind']}; " +
                      ", ".join(f"{k} {v}" for k, v in r.items()
                                if k not in ("path", "kind", "findings", "problems", "unusable")) + ")")
    if r.get("unusable"):
        if not as_json:
            console.print(f"{r['unusable']} image(s) would stop train, cache-features and eval; "
                          f"`nascli data clean {path} --out CLEAN.json` writes the dataset without them")
        raise typer.Exit(2)


FINDINGS_SHOWN = 20  # lines per kind of finding; --json lists every one


def _print_findings(r: dict) -> None:
    """One line per file (errors first, at most FINDINGS_SHOWN of a kind), then a table per kind."""
    from .data.audit import KINDS

    findings = sorted(r["findings"], key=lambda f: (not f["error"], list(KINDS).index(f["kind"])))
    shown = {}
    for f in findings:
        shown[f["kind"]] = shown.get(f["kind"], 0) + 1
        if shown[f["kind"]] <= FINDINGS_SHOWN:
            console.print(f"{'error' if f['error'] else 'warning'}: {f['file']}: {f['detail']}", highlight=False,
                          soft_wrap=True)
    for kind, n in shown.items():
        if n > FINDINGS_SHOWN:
            console.print(f"... {n - FINDINGS_SHOWN} more '{kind}' lines (--json lists every file)")
    if r["problems"]:
        _table(f"{r['path']}: {r['images']} images checked", ["finding", "images", "what the commands do"],
               [(k, n, ("ERROR " if KINDS[k][0] else "") + KINDS[k][1]) for k, n in r["problems"].items()])


@app.command("search")
def search_cmd(
    method: Annotated[str, typer.Option(help="nas-fcos | nas-fpn (LSTM+PPO controller) | auto-fpn (differentiable, "
                                             "a supernet epoch per trial) | sp-nas (grows the baseline's "
                                             "backbone; an images cache) | detnas (evolution on a one-shot "
                                             "supernet; an images cache) | random.")] = "nas-fcos",
    proxy: Annotated[str | None, typer.Option(help="Proxy spec: a YAML path, or a name in ./proxies/ or built in (`nascli proxies`; default: the method's).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Feature cache file from cache-features.")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials to finish in total.")] = None,
    minutes: Annotated[float | None, typer.Option(min=0, help="Also stop asking for new trials after this much of the "
                                                              "search's wall clock (summed over resumes); the control "
                                                              "and the re-scoring still run.")] = None,
    run: Annotated[Path, typer.Option(help="Run folder (created; holds run.db, spec.yaml, best.json).")] = Path("runs/search"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this folder.")] = None,
    top: Annotated[int, typer.Option(help="Rows in the final table.")] = 5,
    lam: Annotated[str | None, typer.Option("--lambda", help="auto-fpn resource weight: small (0.2) | middle (0.02) | "
                                                             "big (0.002) | a number (default: the spec's).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda: where trials train.")] = "cpu",
    executor: Annotated[str, typer.Option(help="local (this machine: one trial at a time, or --workers at once) | ray (Ray core tasks, "
                                               "the spec's `resources` each; pip install 'nascli\\[ray]').")] = "local",
    ray_address: Annotated[str, typer.Option(help="--executor ray: auto (the running cluster) | HOST:PORT | local "
                                                  "(a private instance on this machine).")] = "auto",
    workers: Annotated[int | None, typer.Option(min=1, help="Trials at once. local: N processes sharing --threads "
                                                            "(default 1, in this process); ray: at most N (default: "
                                                            "as many as the cluster fits).")] = None,
    supernet: Annotated[Path | None, typer.Option(help="detnas, or random over its space: score paths of this "
                                                       "run's finished supernet instead of training one.")] = None,
    latency_target: Annotated[str | None, typer.Option(help="Skip, untrained, every candidate whose predicted latency once "
                                                           "promoted (this machine's per-op table, at --threads) is over "
                                                           "this: 1.0x (the control's) or 80ms. The strategy is told they "
                                                           "failed; they do not count as trials.")] = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Search decoders on cached features; every trial is committed to RUN/run.db as it finishes.

    Example: [cyan]nascli search --method nas-fcos --proxy nas-fcos --cache cache/<key>.h5 --trials 50 --run runs/s1[/]
    Example: [cyan]nascli search --method auto-fpn --lambda small --cache cache/<key>.h5 --trials 12 --run runs/a1[/]
    Example: [cyan]nascli search --method sp-nas --cache cache/<images key>.h5 --trials 12 --run runs/g1[/]
    Example: [cyan]nascli search --method detnas --cache cache/<images key>.h5 --trials 40 --run runs/d1[/]
    Example: [cyan]nascli search --method random --proxy detnas --supernet runs/d1 --cache cache/<images key>.h5 --trials 40 --run runs/d1-random[/]
    Example: [cyan]nascli search --method nas-fcos --cache cache/<key>.h5 --trials 50 --latency-target 1.0x --run runs/s2[/]
    Example: [cyan]nascli search --resume runs/s1[/]
    Example: [cyan]nascli search --resume runs/s1 --executor ray --ray-address auto[/]
    """
    from .methods import default_proxy
    from .search import run_search

    if resume is None and (cache is None or trials is None):
        raise NascliError("search: give --cache and --trials (or --resume RUN)")
    _use_threads(threads, workers if executor == "local" else None)
    with _progress("search", not as_json, "trial") as on_progress:
        r = run_search(method, proxy or default_proxy(method), cache, trials, resume or run, seed=seed,
                       resume=resume is not None, on_progress=on_progress, lam=lam, device=device,
                       executor=executor, ray_address=ray_address, workers=workers, supernet=supernet,
                       minutes=minutes, latency_target=latency_target, force=force)
    if as_json:
        return _emit_json(r)
    _print_top(r, top)


def _one_line(genotype_json: str) -> str:
    from .spaces import load_genotype

    return load_genotype(genotype_json).describe()


def _print_top(r: dict, top: int) -> None:
    """The control, then the best trials (re-scored ones as mean ± std over their fresh seeds),
    the proxy's seed noise and the verdict."""
    def cost(x):
        return f"{(x['params'] or 0) / 1e6:.3f} M", f"{(x['flops'] or 0) / 1e9:.3f} G"

    def spread(x):
        if x["mean"] is None:
            return ""
        return f"{x['mean']:.4f} ± {x['std']:.4f} ({x['seeds']})" if x["std"] is not None else f"{x['mean']:.4f} (1)"

    from .spaces import SPACES
    from .spaces.base import BACKBONE

    # a backbone's genotype says what it is in one line; decoders are drawn (runs show --arch)
    backbone = r.get("space") in SPACES and SPACES[r["space"]].SEARCHES == BACKBONE

    def arch(x):
        return [_one_line(x["genotype"])] if backbone else []

    timed = r.get("latency_target") is not None

    def latency(x):  # predicted once promoted, at the search's latency target
        return [f"{x['latency_ms']:.1f}" if x.get("latency_ms") is not None else ""] if timed else []

    rows = []
    if r.get("control"):
        c = r["control"]
        rows.append(("control", *arch(c), "", spread(c) if c["mean"] is not None else c["status"], *cost(c),
                     *latency(c), ""))
    rows += [(t["trial"], *arch(t), f"{t['reward']:.4f}", spread(t), *cost(t), *latency(t), f"{t['seconds'] or 0:.1f}")
             for t in r["top"][:top]]
    skipped = f", {r['skipped']} skipped untrained over the latency target" if r.get("skipped") else ""
    _table(f"{r['run']}: {r.get('method') or 'no search started'}, {r['finished'] - r.get('skipped', 0)} trials "
           f"({r['failed']} failed{skipped}) + the control",
           ["trial", *(["architecture"] if backbone else []), "search reward",
            "mean ± std (seeds)", "params", "FLOPs", *(["pred. ms"] if timed else []), "seconds"], rows)
    if timed:
        console.print(f"latency target {r['latency_target']}: {r['latency_limit_ms']:.1f} ms/image predicted once "
                      f"promoted (the control {r['latency_control_ms']:.1f}); table {r.get('latency_table')}")
    if r.get("noise") is not None:
        console.print(f"proxy seed noise (pooled std over re-scored genotypes): {r['noise']:.4f}")
    if r.get("verdict"):
        console.print(f"verdict: {r['verdict']['text']}")


@runs_app.command("list")
def runs_list(root: Annotated[Path, typer.Option(help="Folder holding run folders.")] = Path("runs"),
              as_json: JsonOpt = False):
    """Every run under --root with its method, progress and best reward.

    Example: [cyan]nascli runs list[/]
    """
    from .report import list_runs

    r = list_runs(root)
    if as_json:
        return _emit_json(r)
    _table(f"runs in {root}", ["run", "method", "finished", "failed", "best"],
           [(x["run"], x["method"], f"{x['finished']}/{x['target']}", x["failed"],
             "" if x["best"] is None else f"{x['best']:.4f}") for x in r])


@runs_app.command("show")
def runs_show(run: RunArg, top: Annotated[int, typer.Option(help="Rows in the table.")] = 10,
              arch: Annotated[int | None, typer.Option(help="Draw trial N's architecture (0: the control) to "
                                                            "RUN/arch-N.png instead.")] = None,
              as_json: JsonOpt = False):
    """The top-k trials of a run, and its reward-vs-trial figure (RUN/rewards.png); or, with
    --arch N, trial N's architecture as a graph (nodes, ops, levels).

    Example: [cyan]nascli runs show runs/s1 --top 5[/]
    Example: [cyan]nascli runs show runs/s1 --arch 12[/]
    """
    from .methods import lookup
    from .protocol import summarize
    from .report import reward_figure
    from .store import RunStore

    store = RunStore(run, create=False)
    try:
        if arch is not None:
            return _show_arch(store, arch, as_json)
        r = summarize(store, top)
    finally:
        store.close()
    r["figure"] = str(reward_figure(run))
    panels = lookup(r["method"], r.get("space")).panels if r.get("method") else None
    if panels:
        r.update(panels(run, run))
    if as_json:
        return _emit_json(r)
    _print_top(r, top)
    console.print(f"figure: {r['figure']}")
    for line in r.get("notes", []):
        console.print(line)
    for title, (columns, rows) in r.get("tables", {}).items():
        _table(title, columns, rows)
    for title, path in r.get("figures", {}).items():
        console.print(f"{title.split(':')[0]}: {path}")


def _show_arch(store, trial_id: int, as_json: bool) -> None:
    from .drawing import draw_genotype
    from .inputs import stored_genotype

    t = store.trial(trial_id)
    if t is None:
        raise NascliError(f"--arch {trial_id}: {store.path} has no trial {trial_id} (trials 0..{store.count()})")
    genotype = stored_genotype(store, t.genotype, f"trials row {t.id} field 'genotype'")
    name = "control" if t.id == 0 else f"trial {t.id}"
    reward = "" if t.reward is None else f", reward {t.reward:.4f}"
    path = draw_genotype(genotype, store.run_dir / f"arch-{t.id}.png", f"{store.run_dir.name}: {name}{reward}")
    if as_json:
        return _emit_json({"trial": t.id, "space": genotype.space, "genotype": json.loads(genotype.to_json()),
                           "figure": str(path)})
    console.print(f"{name} ({genotype.space}): {path}")


@app.command("export")
def export_cmd(run: RunArg, top: Annotated[int, typer.Option(help="How many of the best to export.")] = 1,
               out: Annotated[Path | None, typer.Option(help="Folder (default RUN/export).")] = None,
               arch: Annotated[str | None, typer.Option(help="A retrained architecture of the run (baseline, trial-18) to export as a detector.")] = None,
               onnx: Annotated[Path | None, typer.Option(help="With --arch: write its network as this ONNX file, checked against torch with ONNX Runtime.")] = None,
               as_json: JsonOpt = False):
    """Write the best genotypes of a run as JSON files (what retrain reads), or a retrained detector as ONNX.

    The ONNX file is the network (image -> raw outputs at the promoted input size); post-processing
    (scores, top-k, NMS) stays in nascli.deploy.OnnxDetector, as docs/latency.md says.
    Example: [cyan]nascli export runs/s1 --top 3[/]
    Example: [cyan]nascli export runs/s1 --arch trial-18 --onnx det.onnx[/]
    """
    if (arch is None) != (onnx is None):
        raise SpecError("export: give --arch and --onnx together (or neither, for genotype json files)")
    if onnx is not None:
        from .deploy import export_onnx
        from .report import promoted_checkpoint

        r = export_onnx(promoted_checkpoint(run, arch), onnx)
        return _emit_json(r) if as_json else console.print(
            f"wrote {r['onnx']} ({r['bytes'] / 1e6:.1f} MB, input 1x3x{r['input_size'][0]}x{r['input_size'][1]}, "
            f"outputs {', '.join(r['outputs'])}); ONNX Runtime matches torch within {r['max_relative_difference']:.1e}",
            soft_wrap=True)
    from .report import export_best

    paths = export_best(run, top=top, out=out or run / "export")
    _emit_json(paths) if as_json else console.print("\n".join(paths) or "no finished trials")


# ---------------------------------------------------------------- promotion and comparison


@app.command("retrain")
def retrain_cmd(
    run: RunArg,
    top: Annotated[int, typer.Option(min=0, help="Retrain the K best finished trials.")] = 3,
    arch: Annotated[list[str] | None, typer.Option(help="Also retrain a genotype: a .json file or zoo:NAME (repeatable).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Baseline checkpoint (default: the one the run's cache was built from).")] = None,
    weights: Annotated[str | None, typer.Option(help=f"Start the backbone from these weights instead of the baseline's: {WEIGHTS_HELP}.")] = None,
    data: Annotated[Path | None, typer.Option(help="Training COCO json (default: the baseline's).")] = None,
    val: Annotated[Path | None, typer.Option(help="Test COCO json to evaluate on: images the search never saw (required).")] = None,
    image_dir: ImageDirOpt = None,
    val_image_dir: Annotated[Path | None, typer.Option(help="Images of --val (default: its json's info.image_dir or folder).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs of the final schedule (default: the baseline's).")] = None,
    width: Annotated[int | None, typer.Option(min=8, help="Decoder width, e.g. 128 or 256 (default: the baseline's).")] = None,
    head_width: Annotated[int | None, typer.Option(min=8, help="Head width if not --width (@128-256: --width 128 --head-width 256).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="First seed (default: the baseline's); --seeds counts up from it.")] = None,
    seeds: Annotated[str, typer.Option(help="Seeds of the final schedule per architecture (the test verdict needs 2), or "
                                            "'auto': as many as the seed noise measured on meta-val needs for a 1 AP gain "
                                            "at 80 % power (at most 5), fixed before test is read.")] = "2",
    lr: Annotated[float | None, typer.Option(min=0, help="Pin one peak rate (of --optimizer, default SGD) for every architecture (no grid).")] = None,
    lr_grid: Annotated[str | None, typer.Option(help="Points each architecture tries on meta-val: rates, e.g. 0.005,0.01,0.02, and OPTIMIZER:RATE, e.g. adamw:4e-4 (default: SGD at FCOS's 0.01 per 16 images and AdamW at 8e-4, 1.6e-3, 3.2e-3 for 8 images a batch, scaled by the square root of the batch).")] = None,
    grid_epochs: Annotated[int | None, typer.Option(min=1, help="Epochs of each grid run (default: a third of the schedule).")] = None,
    extend_grid: Annotated[int, typer.Option(min=0, help="An architecture whose best meta-val point is its optimiser's largest rate also tries twice that rate, up to K times.")] = 0,
    select_val: Annotated[Path | None, typer.Option(help="Meta-val COCO json the grid chooses on (default: the search's).")] = None,
    deep_supervision: Annotated[bool, typer.Option("--deep-supervision", help="NAS-FPN: train the head on every stacked pyramid (anytime detection).")] = False,
    frozen_backbone_epochs: Annotated[int | None, typer.Option(min=0, help="Each row's first epochs train the decoder on the frozen backbone, then everything (LP-FT; default 0).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (default, FCOS's) | adamw: the optimiser of the bare rates of --lr / --lr-grid.")] = None,
    ledger: Annotated[Path | None, typer.Option(help="Also keep each finished row in this folder (small: commit it); on another machine the same request rebuilds matching rows from it instead of training them.")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
):
    """Promote the run's best K decoders and the control fairly, then evaluate them on test.

    Every architecture trains the short schedule at each rate of the grid and keeps the rate with
    the best meta-val AP (never test); then the full schedule at that rate with --seeds seeds,
    evaluated on --val. Rerunning the same command resumes: finished rows are skipped, an
    interrupted one continues from its last epoch.
    Example: [cyan]nascli retrain runs/s1 --top 3 --val data/test.json --seeds 3[/]
    Example: [cyan]nascli retrain runs/s1 --top 0 --arch zoo:nas-fcos --width 128 --head-width 256 --lr 0.01[/]
    """
    from .report import compare
    from .retrain import Promotion, retrain

    grid = _rates(lr_grid) if lr_grid else None
    _use_threads(threads)
    with _progress("retrain", not as_json, "epoch") as on_progress:
        r = retrain(run, Promotion(
            val=val, top=top, archs=tuple(arch or ()), checkpoint=checkpoint, weights=weights, data=data,
            image_dir=image_dir, val_image_dir=val_image_dir, select_val=select_val, epochs=epochs, width=width,
            head_width=head_width, seed=seed, seeds=_seed_count(seeds), lr=lr, lr_grid=grid, grid_epochs=grid_epochs,
            extend_grid=extend_grid, optimizer=optimizer, deep_supervision=deep_supervision,
            frozen_backbone_epochs=frozen_backbone_epochs, device=device, ledger=ledger), on_progress=on_progress)
    if as_json:
        return _emit_json(r)
    console.print(f"promotion budget: grid {r['grid_seconds'] / 60:.1f} min "
                  f"({sum(len(v) for v in r['grid'].values())} runs on meta-val), final "
                  f"{r['final_seconds'] / 60:.1f} min ({len(r['chosen'])} architectures x {len(r['seeds'])} seeds on test)")
    if r["ledger_not_reused"]:
        differ = sorted({k for keys in r["ledger_not_reused"].values() for k in keys})
        console.print(f"note: {len(r['ledger_not_reused'])} row(s) of --ledger {ledger} were trained again: this "
                      f"machine's {', '.join(differ)} differ from what they were trained from (sha256)", highlight=False)
    if r.get("auto_seeds"):
        console.print(f"--seeds auto: {r['auto_seeds']['seeds']} ({r['auto_seeds']['why']})", highlight=False)
    edge = [name for name, label in r["chosen"].items()
            if label and name in r["grid"] and _largest_of_its_kind(label, r["grid"][name])]
    if edge:
        console.print(f"note: {', '.join(edge)} chose the grid's largest rate for its optimiser; a higher one "
                      f"might do better (--extend-grid K, or --lr-grid with rates above it)")
    _print_compare(compare([run]))


def _rates(text: str) -> tuple:
    """--lr-grid: rates (of --optimizer) and OPTIMIZER:RATE points, comma-separated."""
    from .retrain import grid_point

    points = tuple(grid_point(x.strip()) if ":" in x else x.strip() for x in text.split(",") if x.strip())
    try:
        rates = tuple(p if isinstance(p, tuple) else float(p) for p in points)
    except ValueError:
        raise SpecError(f"--lr-grid: '{text}' is not a comma-separated list of rates") from None
    if not rates or min(p[1] if isinstance(p, tuple) else p for p in rates) <= 0:
        raise SpecError(f"--lr-grid: '{text}' needs one or more positive rates")
    return rates


def _seed_count(text: str) -> int | str:
    """--seeds: a count >= 1, or 'auto'."""
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        raise SpecError(f"--seeds {text}: a count >= 1 or 'auto'") from None
    if count < 1:
        raise SpecError(f"--seeds {text}: a count >= 1 or 'auto'")
    return count


def _largest_of_its_kind(label: str, grid: dict) -> bool:
    """Whether the chosen grid point has the largest rate tried with its optimiser."""
    from .retrain import at_edge, grid_point

    return at_edge(grid_point(label), map(grid_point, grid))


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders whose retrained architectures to compare.")],
    figure: Annotated[Path | None, typer.Option("--figure", help="PNG to write (default FIRST_RUN/compare.png).")] = None,
    min_gain: Annotated[float, typer.Option(min=0, help="Test-AP points an architecture must gain over the control, beyond seed noise, to count as a win.")] = 1.0,
    latency_images: Annotated[int, typer.Option(min=0, help="Re-time each architecture's first seed and the control on this many test images, interleaved in this process (median; 0: use the last timing kept in the run).")] = 30,
    latency_target: Annotated[str | None, typer.Option(help="A win must also run within this latency: 1.0x (the control's) or 80ms (default: the search's --latency-target).")] = None,
    runtime: Annotated[str, typer.Option(help="torch | onnxruntime: what the re-timing runs under (onnxruntime exports each model first, ~10-30 s each; pip install 'nascli\\[deploy]').")] = "torch",
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
):
    """Retrained architectures side by side: proxy reward, AP, cost, latency; Pareto fronts; proxy fidelity.

    Latency is what a user deploys: every architecture and the control are timed in one process,
    interleaved image by image at the thread count shown, and each gets its ratio to the control
    with a 95 % interval.
    Example: [cyan]nascli compare runs/s1 runs/s2[/]
    Example: [cyan]nascli compare runs/s1 --latency-target 1.0x --threads 1[/]
    """
    from .report import compare, compare_figure

    _use_threads(threads)
    r = compare(runs, min_gain=min_gain, latency_images=latency_images, latency_target=latency_target, device=device,
                runtime=runtime)
    r["figure"] = str(compare_figure(r, figure or runs[0] / "compare.png"))
    if as_json:
        return _emit_json(r)
    _print_compare(r)
    console.print(f"figure: {r['figure']}")


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to report on (several: one page comparing them).")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file to write (default FIRST_RUN/report.html).")] = None,
    as_json: JsonOpt = False,
):
    """One self-contained HTML page of the runs: data, spec, trials, verdicts on the proxy and on
    test, figures and the architectures drawn; nothing in it is fetched, so it can be sent as is.

    Example: [cyan]nascli report runs/s1 --out s1.html[/]
    Example: [cyan]nascli report runs/detnas-evolution runs/detnas-random --out detnas.html[/]
    """
    from .report_page import write_report

    r = write_report(runs, out or runs[0] / "report.html")
    if as_json:
        return _emit_json(r)
    for run in r["runs"]:
        console.print(f"{run['run']}: {run['trials']} trial rows; {run['proxy_verdict']}"
                      + (f"; {run['test_verdict']}" if run["test_verdict"] else ""))
    console.print(f"report: {r['report']} ({r['bytes'] / 1e3:.0f} kB)")


def _print_compare(r: dict) -> None:
    from .retrain import point_label

    def pct(v):  # pycocotools' -1: no object of that size in the test split
        return "" if v is None else "n/a" if v < 0 else f"{100 * v:.1f}"

    several = len(r["fidelity"]) > 1
    rows = []
    for a in sorted(r["architectures"], key=lambda a: (a["status"] != "done", -(a.get("AP") or 0))):
        done = a["status"] == "done"
        ap = "" if not done else pct(a["AP"]) + ("" if a["AP_std"] is None else f" ± {100 * a['AP_std']:.1f}")
        grid = " ".join(f"{label}:{pct(v) or 'x'}" for label, v in sorted(a["grid"].items()))
        rows.append(([Path(a["run"]).name] if several else []) + [
            a["arch"] + (" *" if a["pareto"] else "") + (" †" if a.get("pareto_latency") else ""),
            "" if a["reward"] is None else f"{a['reward']:.4f}",
            grid, "" if a["lr"] is None else point_label(a["optimizer"], a["lr"]), str(a["seeds"]), ap,
            *(pct(a.get(m)) for m in ("AP50", "APs", "APm")),
            f"{a['params'] / 1e6:.2f}" if done else "", f"{a['flops'] / 1e9:.2f}" if done else "",
            _latency_cell(a), f"{a['minutes']:.1f}",
            a["status"] if not a["reason"] else f"{a['status']}: {a['reason'][:40]}"])
    columns = (["run"] if several else []) + ["arch", "proxy reward", "grid: lr:meta-val AP", "lr", "seeds",
                                              "test AP", "AP50", "APs", "APm", "params M", "GFLOPs", "ms/img (× control)",
                                              "train min", "status"]
    _table("promoted architectures (test AP mean ± std over seeds; * / † = on the AP-vs-FLOPs / AP-vs-latency "
           "Pareto front)",
           columns, rows)
    if not r["rows"]:
        console.print("no retrained architectures yet: run [cyan]nascli retrain RUN[/]")
    timed = [a["latency"] for a in r["architectures"] if a.get("latency", {}).get("interleaved")]
    if timed:
        console.print(f"latency: median of {timed[0]['latency_images']} test images each, batch 1, forward + "
                      f"post-processing, interleaved with the control in one process, {timed[0]['threads']} "
                      f"thread(s) on {timed[0]['processor']}, under {timed[0]['runtime']}")
    for run, f in r["fidelity"].items():
        if r["rows"]:
            console.print(f"test verdict {run}: {r['test_verdict'][run]['text']}")
        if f.get("verdict"):
            console.print(f"search verdict {run}: {f['verdict']}")
        if f["kendall_tau"] is None:
            console.print(f"proxy fidelity {run}: needs 3+ retrained architectures with a proxy reward (has {f['n']}; "
                          f"over 2 a rank correlation is +-1 by construction)")
        else:
            interval = f" (90% bootstrap {f['tau_interval'][0]:.2f} to {f['tau_interval'][1]:.2f})" \
                if f.get("tau_interval") else ""
            console.print(f"proxy fidelity {run}: Kendall tau {f['kendall_tau']:.3f}{interval}, "
                          f"Spearman rho {f['spearman_rho']:.3f} over {f['n']} architectures")
            if f.get("baselines"):
                console.print("  ranking by cost alone (more = better), Kendall tau: " +
                              ", ".join(f"{k} {v:.3f}" for k, v in f["baselines"].items()))


def _latency_cell(a: dict) -> str:
    """'254 (2.86×, 2.70-3.01)': median ms/image, ratio to the control and its interval."""
    lat = a.get("latency")
    if not lat:
        return f"{a['latency_ms']:.0f}" if a["status"] == "done" and a.get("latency_ms") else ""
    interval = lat.get("ratio_interval")
    ratio = f"{lat['ratio']:.2f}×" + (f", {interval[0]:.2f}-{interval[1]:.2f}" if interval else ", apart")
    return f"{lat['latency_ms']:.1f} ({ratio})"


def main() -> None:
    """Entry point: user errors become one line and exit code 2; bugs keep their traceback."""
    try:
        app()
    except NascliError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # [x] is not markup
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun with --resume to continue")
        sys.exit(130)
