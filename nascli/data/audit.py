"""What `check` reports and `data clean` repairs: every photo of a COCO json decoded once and held
against what the json declares, by the policy of photos.py.

Errors stop the commands that read images (train, cache-features, eval) at their start, before a
long job; warnings say what those commands do about a file and go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .coco import clipped_annotation, clipped_box, read_json, resolve_image_dir, validate_coco
from .photos import PhotoFacts, annotated_upright, convention, decoded_size, scan, turns_upright

#: kind -> (is an error, what the commands do about it)
KINDS = {
    "missing": (True, "refused: the commands stop at start"),
    "unreadable": (True, "refused: the commands stop at start; data clean drops it"),
    "truncated": (True, "refused (never padded with grey); data clean drops it"),
    "size": (True, "refused: boxes are in the declared frame; data clean rescales (proportional) or drops it"),
    "exif": (False, "orientation applied or not by the dataset's evidence (docs/usage.md)"),
    "mode": (False, "converted to 8-bit RGB (16-bit scaled, alpha dropped)"),
    "clipped": (False, "boxes past the border clipped to the image"),
    "dropped": (False, "boxes with no area inside the image dropped"),
    "no box": (False, "kept: an image without objects (a negative)"),
}


@dataclass(frozen=True)
class Finding:
    image_id: int
    file: str
    kind: str
    detail: str

    @property
    def error(self) -> bool:
        return KINDS[self.kind][0]


@dataclass
class Audit:
    """Findings per image, the EXIF convention used, and the inputs clean needs."""

    path: Path
    folder: Path
    data: dict
    facts: dict[int, PhotoFacts]
    upright_default: bool
    why_upright: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error]

    @property
    def unusable(self) -> set[int]:
        """Ids of the images the commands would refuse."""
        return {f.image_id for f in self.errors}

    def rescalable(self, image_id: int) -> tuple[int, int] | None:
        """The decoded size an image's boxes can be rescaled to (declared and decoded sizes are
        proportional: the photo was resized after annotation), else None."""
        im = next(im for im in self.data["images"] if im["id"] == image_id)
        facts, declared = self.facts[image_id], (im["width"], im["height"])
        if facts.error:
            return None
        size = decoded_size(facts, declared, self.upright_default)
        return size if size != declared and proportional(size, declared) else None

    def counts(self) -> dict[str, int]:
        """Files per kind of finding, in KINDS order."""
        counted = {k: len({f.image_id for f in self.findings if f.kind == k}) for k in KINDS}
        return {k: n for k, n in counted.items() if n}

    def raise_if_unusable(self) -> None:
        """One line naming the first bad file, how many there are, and the commands that help."""
        errors = self.errors
        if errors:
            first = errors[0]
            raise DataError(f"{first.file}: {first.detail} ({len(self.unusable)} of "
                            f"{len(self.data['images'])} images of {self.path} cannot be used; "
                            f"`nascli check {self.path}` lists them, `nascli data clean {self.path} "
                            f"--out CLEAN.json` drops them)")


def audit(ann_path, image_dir=None, workers: int | None = None) -> Audit:
    """Decodes every image of the json (remembered per file) and lists what is wrong with each."""
    ann_path = Path(ann_path)
    data = validate_coco(read_json(ann_path), ann_path)
    folder = resolve_image_dir(ann_path, image_dir, data)
    files = {im["id"]: folder / im["file_name"] for im in data["images"]}
    decoded = scan(files.values(), workers)
    facts = {i: decoded[str(p)] for i, p in files.items()}
    try:
        upright, why = convention(data, lambda im: None if facts[im["id"]].error else facts[im["id"]])
    except DataError as e:
        raise DataError(f"{ann_path}: {e}") from None
    report = Audit(ann_path, folder, data, facts, upright, why)
    boxes = {}
    for a in data["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    for im in data["images"]:
        report.findings += _image_findings(im, str(files[im["id"]]), facts[im["id"]], boxes.get(im["id"], []),
                                           upright, why)
    return report


def proportional(size, declared) -> bool:
    """The same picture at another resolution (aspect ratios within 1 %)."""
    return math.isclose(size[0] / declared[0], size[1] / declared[1], rel_tol=0.01)


def _image_findings(im: dict, file: str, facts: PhotoFacts, boxes: list, upright_default: bool,
                    why: str) -> list[Finding]:
    found = []

    def add(kind, detail):
        found.append(Finding(im["id"], file, kind, detail))

    declared = (im["width"], im["height"])
    if facts.error:
        kind = "missing" if facts.error == "file not found" else facts.error.split(" ", 1)[0]
        add(kind, facts.error)
    else:
        upright = turns_upright(facts, declared, upright_default)
        if facts.orientation != 1:
            said = annotated_upright(facts, declared)
            reason = why if said is None else f"its declared size is the {'upright' if said else 'stored'} one"
            add("exif", f"EXIF orientation {facts.orientation}: {'turned upright' if upright else 'left as stored'} "
                        f"({reason})")
        if facts.mode != "RGB":
            add("mode", f"mode {facts.mode} converted to RGB")
        size = decoded_size(facts, declared, upright_default)
        if size != declared:
            add("size", f"decodes to {size[0]}x{size[1]}{' upright' if upright else ''} but the json declares "
                        f"{declared[0]:g}x{declared[1]:g} "
                        f"({'proportional' if proportional(size, declared) else 'not proportional'})")
    clipped = dropped = 0
    for box in boxes:
        kept = clipped_box(box, *declared)
        dropped += kept is None
        clipped += kept is not None and kept != list(box)
    if clipped:
        add("clipped", f"{clipped} box(es) past the border clipped")
    if dropped:
        add("dropped", f"{dropped} box(es) with no area inside the image dropped")
    if len(boxes) == dropped:
        add("no box", "no box" if not boxes else "no usable box")
    return found


def clean(report: Audit, out_path) -> dict:
    """The dataset without what cannot be used: unreadable files dropped, proportional size
    mismatches rescaled, boxes clipped, empty boxes dropped; `info` records the image folder and
    the EXIF convention so the new json reads the same anywhere. Returns what was dropped."""
    from .coco import write_json

    if Path(out_path).resolve() == report.path.resolve():
        raise DataError(f"{out_path}: --out is the input file; write the cleaned dataset elsewhere")
    rescaled = {i: size for i in report.unusable for size in [report.rescalable(i)] if size}
    dropped_images = [f for f in report.errors if f.image_id not in rescaled]
    gone = {f.image_id for f in dropped_images}
    images, scale = [], {}
    for im in report.data["images"]:
        if im["id"] in gone:
            continue
        if im["id"] in rescaled:
            width, height = rescaled[im["id"]]
            scale[im["id"]] = (width / im["width"], height / im["height"])
            im = {**im, "width": width, "height": height}
        images.append(im)
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    annotations, boxes_dropped, boxes_clipped = [], 0, 0
    for a in report.data["annotations"]:
        if a["image_id"] in gone:
            continue
        kept = clipped_annotation(a, *sizes[a["image_id"]], scale.get(a["image_id"], (1.0, 1.0)))
        if kept is None:
            boxes_dropped += 1
            continue
        x, y, w, h = a["bbox"]
        sx, sy = scale.get(a["image_id"], (1.0, 1.0))
        boxes_clipped += kept["bbox"] != [x * sx, y * sy, w * sx, h * sy]
        annotations.append(kept)
    info = {**(report.data.get("info") if isinstance(report.data.get("info"), dict) else {}),
            "image_dir": str(report.folder.resolve()),
            "exif_orientation": "upright" if report.upright_default else "stored",
            "cleaned_from": str(report.path)}
    write_json({**report.data, "images": images, "annotations": annotations, "info": info}, out_path)
    return {"out": str(out_path), "images": len(images), "annotations": len(annotations),
            "dropped": [{"file": f.file, "image_id": f.image_id, "why": f.detail} for f in dropped_images],
            "rescaled": len(rescaled), "boxes_dropped": boxes_dropped,
            "boxes_clipped": boxes_clipped}
