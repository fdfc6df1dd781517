"""COCO json: validated loading, the training dataset, its transforms, and per-split statistics.

Every dataset nascli touches is a COCO instances json whose `file_name`s resolve against an image
directory (by default the json's own folder, then its `images/` sub-folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..files import written_whole

#: COCO's area thresholds for small / medium / large objects (pixels²).
SMALL_AREA, LARGE_AREA = 32**2, 96**2


def read_json(path) -> dict:
    """Reads a json file, turning a missing or malformed file into a DataError that names it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text JSON file") from None
    except (ValueError, RecursionError) as e:  # a number too long to convert, nesting too deep
        raise DataError(f"{path}: malformed JSON ({type(e).__name__})") from None


MAX_SIDE = 1_000_000  # pixels: a larger image side or box is a corrupted file


def _number(v) -> bool:
    """A finite int or float (not a bool, not NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_coco(data, path) -> dict:
    """Checks the fields nascli relies on; the error names the file and the offending field."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: field '{key}' is missing or not a list")
    if not data["images"]:
        raise DataError(f"{path}: field 'images' is empty")
    if not data["categories"]:
        raise DataError(f"{path}: field 'categories' is empty")
    cat_ids = set()
    for i, c in enumerate(data["categories"]):
        if (not isinstance(c, dict) or not isinstance(c.get("id"), int) or isinstance(c.get("id"), bool)
                or not isinstance(c.get("name"), str)):
            raise DataError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name'")
        cat_ids.add(c["id"])
    image_ids = set()
    for i, im in enumerate(data["images"]):
        for key in ("id", "file_name", "width", "height"):
            if not isinstance(im, dict) or key not in im:
                raise DataError(f"{path}: images[{i}].{key} is missing")
        if not isinstance(im["id"], int) or isinstance(im["id"], bool):
            raise DataError(f"{path}: images[{i}].id must be an integer")
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise DataError(f"{path}: images[{i}].file_name must be a non-empty string")
        for key in ("width", "height"):
            if not _number(im[key]) or not 1 <= im[key] <= MAX_SIDE:
                raise DataError(f"{path}: images[{i}].{key} must be a number of pixels in 1..{MAX_SIDE}")
        if im["id"] in image_ids:
            raise DataError(f"{path}: images[{i}].id {im['id']} appears twice")
        image_ids.add(im["id"])
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise DataError(f"{path}: annotations[{i}] is not an object")
        if not isinstance(a.get("image_id"), int) or a["image_id"] not in image_ids:
            raise DataError(f"{path}: annotations[{i}].image_id {a.get('image_id')!r} is not in images")
        if not isinstance(a.get("category_id"), int) or a["category_id"] not in cat_ids:
            raise DataError(f"{path}: annotations[{i}].category_id {a.get('category_id')!r} "
                            f"is not a known class id (categories: {sorted(cat_ids)})")
        box = a.get("bbox")
        if (not isinstance(box, list) or len(box) != 4 or not all(_number(v) and abs(v) <= MAX_SIDE for v in box)
                or box[2] < 0 or box[3] < 0):
            raise DataError(f"{path}: annotations[{i}].bbox must be [x, y, width, height], finite numbers "
                            f"within {MAX_SIDE} px, width and height >= 0")
        if a.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{path}: annotations[{i}].iscrowd must be 0 or 1")
        if "area" in a and not (_number(a["area"]) and a["area"] >= 0):
            raise DataError(f"{path}: annotations[{i}].area must be a finite number >= 0")
    return data


def load_coco(path, usable_boxes: bool = False):
    """A pycocotools COCO index of a validated instances json (quietly: it prints otherwise).
    `usable_boxes`: boxes clipped to their image and those with no area left dropped, as every
    command that reads images sees them (docs/usage.md, "Photos")."""
    from pycocotools.coco import COCO

    data = validate_coco(read_json(path), path)
    if usable_boxes:
        data["annotations"] = list(_usable(data))
    for i, a in enumerate(data["annotations"]):
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _usable(data: dict):
    """The annotations with boxes clipped to their image's declared size; no-area ones left out."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        kept = clipped_annotation(a, *sizes[a["image_id"]])
        if kept is not None:
            yield kept


def clipped_box(box, width, height) -> list[float] | None:
    """[x, y, w, h] clipped to the image; None when no area is left."""
    x0, y0 = min(max(box[0], 0), width), min(max(box[1], 0), height)
    x1, y1 = min(max(box[0] + box[2], 0), width), min(max(box[1] + box[3], 0), height)
    return [x0, y0, x1 - x0, y1 - y0] if x1 > x0 and y1 > y0 else None


def clipped_annotation(a: dict, width, height, scale=(1.0, 1.0)) -> dict | None:
    """An annotation with its box scaled by `scale` (x, y) and clipped to the image, its `area` (a
    mask's, in COCO) scaled alike; None when no area is left."""
    x, y, w, h = a["bbox"]
    scaled = [x * scale[0], y * scale[1], w * scale[0], h * scale[1]]
    box = clipped_box(scaled, width, height)
    if box is None:
        return None
    if box == list(a["bbox"]):
        return a
    if "area" in a:
        a = {**a, "area": a["area"] * box[2] * box[3] / (w * h)}
    return {**a, "bbox": box}


def write_json(data: dict, path) -> Path:
    """Writes json atomically (temporary file + rename), so an interrupted write loses nothing."""
    path = Path(path)
    with written_whole(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f)
    return path


def is_file(path: Path) -> bool:
    """Path.is_file that says False for a name the OS cannot take (a NUL byte, too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_image_dir(ann_path, image_dir=None, data: dict | None = None) -> Path:
    """Where `file_name`s live: the given folder, else the json's `info.image_dir` (written by
    split and convert-voc), else `images/` beside the json, else the json's own folder."""
    if image_dir is not None:
        return Path(image_dir)
    info = (data or {}).get("info")
    recorded = info.get("image_dir") if isinstance(info, dict) else None
    if recorded not in (None, ""):
        if not isinstance(recorded, str):
            raise DataError(f"{ann_path}: info.image_dir must be a folder path")
        return Path(recorded)
    here = Path(ann_path).resolve().parent
    return here / "images" if (here / "images").is_dir() else here


@dataclass(frozen=True)
class Transform:
    """Resize the short side, optionally random-crop and flip; boxes follow, degenerate ones drop.

    `min_size` is the short side after resizing (capped so the long side stays <= `max_size`);
    `crop` (square side, 0 = none) and `flip` are the training augmentations.
    """

    min_size: int = 256
    max_size: int = 1333
    crop: int = 0
    flip: bool = False

    def scale_for(self, width: int, height: int) -> float:
        scale = self.min_size / min(width, height)
        return min(scale, self.max_size / max(width, height))

    def __call__(self, image: Image.Image, boxes: np.ndarray, labels: np.ndarray, rng):
        scale = self.scale_for(*image.size)
        new_w, new_h = round(image.width * scale), round(image.height * scale)
        image = image.resize((new_w, new_h), Image.BILINEAR)
        boxes = boxes * np.float32(scale)
        if self.crop:
            cw, ch = min(self.crop, new_w), min(self.crop, new_h)
            x0 = int(rng.integers(0, new_w - cw + 1))
            y0 = int(rng.integers(0, new_h - ch + 1))
            image = image.crop((x0, y0, x0 + cw, y0 + ch))
            boxes = boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + \
                np.array([image.width, 0, image.width, 0], np.float32)
        boxes = clip_boxes(boxes, image.width, image.height)
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        return image, boxes[keep], labels[keep], scale


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_chw(image: Image.Image) -> np.ndarray:
    """PIL RGB -> normalised float32 CHW, the backbones' input."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


class CocoDetection:
    """Map-style dataset over a COCO json: (CHW float32 image, target dict), via pycocotools.

    Class ids are mapped to contiguous indices in category-id order (`self.class_ids[k]` is the
    COCO id of index k). Crowd annotations are left out of training targets.
    """

    def __init__(self, ann_path, image_dir=None, transform: Transform | None = None, seed: int = 0):
        from .photos import convention, header_facts

        self.ann_path = Path(ann_path)
        self.coco = load_coco(ann_path, usable_boxes=True)
        self.image_dir = resolve_image_dir(ann_path, image_dir, self.coco.dataset)
        self.transform = transform or Transform()
        self.image_ids = sorted(self.coco.getImgIds())
        self.class_ids = sorted(self.coco.getCatIds())
        self.class_names = [self.coco.cats[c]["name"] for c in self.class_ids]
        self._index_of = {c: k for k, c in enumerate(self.class_ids)}
        self.seed = seed
        self.epoch = 0
        missing = self.missing_images()
        if missing:
            raise DataError(f"{self.ann_path}: images[id={missing[0]}].file_name -> {self.image_path(missing[0])} "
                            f"not found ({len(missing)} of {len(self.image_ids)} images missing; "
                            f"--image-dir names their folder)")
        try:  # which images turn upright by their EXIF tag (photos.py): read once, from the headers
            self.upright_default, _ = convention(
                self.coco.dataset, lambda im: header_facts(self.image_dir / im["file_name"]))
        except DataError as e:
            raise DataError(f"{self.ann_path}: {e}") from None

    def audit(self):
        """Every image decoded (remembered per file) against the json: see data/audit.py."""
        from .audit import audit

        return audit(self.ann_path, self.image_dir)

    def missing_images(self) -> list[int]:
        """Ids of images whose file is not on disk: found before a long job starts, not mid-epoch."""
        return [i for i in self.image_ids if not is_file(self.image_path(i))]

    def __len__(self):
        return len(self.image_ids)

    def image_path(self, image_id) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def image_files(self) -> list[str]:
        """Every image's resolved path: what `train` records and the leak checks compare (the same
        file on disk is the same image, whatever json or id refers to it)."""
        return [str(self.image_path(i).resolve()) for i in self.image_ids]

    def load_image(self, image_id) -> Image.Image:
        """The RGB image its boxes apply to, by the policy of photos.py."""
        from .photos import read_photo

        record = self.coco.imgs[image_id]
        return read_photo(self.image_path(image_id), declared=(record["width"], record["height"]),
                          upright_default=self.upright_default, dataset=self.ann_path)

    def annotations(self, image_id):
        """Ground truth of one image as (xyxy float32 boxes, contiguous int64 labels)."""
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = np.array([self._index_of[a["category_id"]] for a in anns], dtype=np.int64)
        return boxes, labels

    def __getitem__(self, index):
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        boxes, labels = self.annotations(image_id)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image, boxes, labels, scale = self.transform(image, boxes, labels, rng)
        target = {"boxes": boxes, "labels": labels, "image_id": image_id, "scale": scale,
                  "size": (image.height, image.width)}
        return to_chw(image), target


def dataset_stats(ann_path) -> dict:
    """Images, objects per class and COCO small/medium/large counts of one json."""
    coco = load_coco(ann_path)
    per_class = {}
    for cid in sorted(coco.getCatIds()):
        anns = coco.loadAnns(coco.getAnnIds(catIds=[cid]))
        areas = np.array([a["bbox"][2] * a["bbox"][3] for a in anns], dtype=np.float64)
        per_class[coco.cats[cid]["name"]] = {
            "id": cid, "objects": len(anns),
            "small": int((areas < SMALL_AREA).sum()),
            "medium": int(((areas >= SMALL_AREA) & (areas < LARGE_AREA)).sum()),
            "large": int((areas >= LARGE_AREA).sum()),
        }
    return {"file": str(ann_path), "images": len(coco.imgs), "objects": len(coco.anns),
            "classes": per_class}
