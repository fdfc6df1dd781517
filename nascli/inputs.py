"""One validation layer: every kind of file a user hands nascli, read the way nascli reads it.

`check(path)` loads a file as the command that takes it would, and returns a short summary. A
malformed file raises a NascliError whose one line names the file and the field, and nothing on
disk changes. `nascli check FILE` runs it before a long job; the fuzz test feeds every kind
corrupted inputs through it. The readers themselves live with the code that uses them; this
module is the list of them, so that no kind of input is forgotten.
"""

from __future__ import annotations

from pathlib import Path

from .errors import NascliError, SpecError


def _coco(path: Path, image_dir=None) -> dict:
    """Every image decoded (in parallel, remembered per file) and held against the json: what
    train, cache-features and eval would refuse (errors) or quietly repair (warnings)."""
    from .data.audit import audit

    report = audit(path, image_dir)
    return {"images": len(report.data["images"]), "annotations": len(report.data["annotations"]),
            "categories": len(report.data["categories"]), "image folder": str(report.folder),
            "exif convention": ("upright" if report.upright_default else "stored") + f" ({report.why_upright})",
            "problems": report.counts(), "unusable": len(report.unusable),
            "findings": [{"file": f.file, "image_id": f.image_id, "kind": f.kind, "detail": f.detail,
                          "error": f.error} for f in report.findings]}


def _voc(path: Path) -> dict:
    from .data.voc import read_voc_xml

    voc = read_voc_xml(path)
    return {"file_name": voc["file_name"], "size": [voc["width"], voc["height"]], "objects": len(voc["objects"])}


def _train_spec(path: Path) -> dict:
    from .config import TrainConfig, load_spec

    cfg = load_spec(TrainConfig, path)
    return {"data": cfg.data, "backbone": cfg.backbone, "epochs": cfg.epochs}


def _proxy_spec(path: Path) -> dict:
    from .config import ProxySpec, load_spec
    from .methods import check_sections
    from .spaces import space_for

    spec = load_spec(ProxySpec, path)
    check_sections(spec, path)
    try:
        space_for(spec)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
    return {"space": spec.space, "epochs": spec.epochs, "width": spec.width}


def _genotype(path: Path) -> dict:
    from .spaces import load_genotype

    genotype = load_genotype(path)
    return {"space": genotype.space}


def _checkpoint(path: Path) -> dict:
    from .evaluate import load_detector

    _, ckpt = load_detector(path)
    return {"epoch": ckpt["epoch"], "backbone": ckpt["model_args"]["backbone"],
            "searched": bool(ckpt["model_args"].get("genotype"))}


def _cache(path: Path) -> dict:
    from .cache import verify

    return {"checked": len(verify(path)["checked"])}


def stored_genotype(store, text: str, where: str):
    """A genotype as a run database row holds it (JSON text); a damaged one names the row."""
    from .spaces import load_genotype

    return load_genotype(store.decode_json(text, where) or {}, f"{store.path}: {where}")


def _run(path: Path) -> dict:
    from .store import RunStore

    store = RunStore(path.parent if path.is_file() else path, readonly=True)
    try:
        store.meta()
        trials = store.trials()
        for t in trials:
            stored_genotype(store, t.genotype, f"trials row {t.id} field 'genotype'")
        store.scores()
        store.load_state()
        for r in store.retrained():
            stored_genotype(store, r["genotype"], f"retrained row '{r['name']}' field 'genotype'")
    finally:
        store.close()
    return {"trials": len(trials)}


#: kind -> (file suffixes, reader). A reader loads the whole file and returns a summary.
KINDS = {
    "coco": ((".json",), _coco),
    "voc": ((".xml",), _voc),
    "train-spec": ((".yaml", ".yml"), _train_spec),
    "proxy-spec": ((".yaml", ".yml"), _proxy_spec),
    "genotype": ((".json",), _genotype),
    "checkpoint": ((".pt", ".pth"), _checkpoint),
    "cache": ((".h5", ".hdf5"), _cache),
    "run": ((".db", ""), _run),
}


def guess_kind(path: Path) -> str:
    """The kind of a file from its suffix, and for json / yaml from its top-level fields."""
    if path.is_dir() or path.suffix == ".db":
        return "run"
    if path.suffix == ".json":
        from .data.coco import read_json

        data = read_json(path)
        return "genotype" if isinstance(data, dict) and "space" in data else "coco"
    if path.suffix in (".yaml", ".yml"):
        from .config import load_yaml

        return "train-spec" if "data" in load_yaml(path) else "proxy-spec"
    for kind, (suffixes, _) in KINDS.items():
        if path.suffix in suffixes:
            return kind
    raise SpecError(f"{path}: cannot tell what kind of file this is from its name; give --kind "
                    f"({', '.join(KINDS)})")


def check(path, kind: str | None = None, image_dir=None) -> dict:
    """Reads `path` as a `kind` file (guessed if not given); returns {path, kind, **summary}.
    `image_dir`: where a COCO json's images are (default: as the commands find them)."""
    path = Path(path)
    if kind is not None and kind not in KINDS:
        from .errors import unknown_name

        raise unknown_name("file kind", kind, KINDS)
    if not path.exists():
        raise NascliError(f"{path}: file not found")
    kind = kind or guess_kind(path)
    summary = KINDS[kind][1](path, image_dir) if kind == "coco" else KINDS[kind][1](path)
    return {"path": str(path), "kind": kind, **summary}
