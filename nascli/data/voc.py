"""Pascal VOC XML -> COCO json, with the degenerate boxes VOC datasets really contain skipped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import DataError
from .coco import MAX_SIDE, write_json


def _text(node, field, xml_path):
    found = node.find(field)
    if found is None or found.text is None:
        raise DataError(f"{xml_path}: field '{field}' is missing")
    return found.text.strip()


def _number(node, field, xml_path) -> float:
    try:
        value = float(_text(node, field, xml_path))
    except ValueError:
        raise DataError(f"{xml_path}: field '{field}' is not a number") from None
    if not math.isfinite(value) or abs(value) > MAX_SIDE:
        raise DataError(f"{xml_path}: field '{field}' is {value}, not a finite pixel coordinate")
    return value


def read_voc_xml(xml_path) -> dict:
    """One VOC annotation file as {file_name, width, height, objects: [{name, box, difficult}]};
    a missing, malformed or incomplete file is a DataError naming the file and the field."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: malformed XML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{xml_path}: unreadable ({type(e).__name__})") from None
    width, height = (int(_number(root, f"size/{k}", xml_path)) for k in ("width", "height"))
    if width < 1 or height < 1:
        raise DataError(f"{xml_path}: field 'size' is {width}x{height}; width and height must be positive")
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{xml_path}: field 'object/bndbox' is missing")
        difficult = (obj.findtext("difficult", default="0") or "0").strip() or "0"
        if difficult not in ("0", "1"):
            raise DataError(f"{xml_path}: field 'object/difficult' is {difficult!r}, not 0 or 1")
        objects.append({"name": _text(obj, "name", xml_path), "difficult": int(difficult),
                        "box": tuple(_number(box, k, xml_path) for k in ("xmin", "ymin", "xmax", "ymax"))})
    return {"file_name": (root.findtext("filename") or f"{xml_path.stem}.jpg").strip(),
            "width": width, "height": height, "objects": objects}


def _image_names(voc_root: Path, split: str | None, annotations_dir: Path):
    if split is None:
        return sorted(p.stem for p in annotations_dir.glob("*.xml"))
    split_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found (split '{split}')")
    names = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{split_file}: split '{split}' is empty")
    return names


def convert_voc(voc_root=None, out_path=None, split: str | None = None, images_dir=None,
                annotations_dir=None, classes: list[str] | None = None) -> dict:
    """Converts VOC XMLs to a COCO instances json and returns a summary.

    Images come from `ImageSets/Main/<split>.txt` under voc_root, or every XML in annotations_dir.
    Class ids are stable: the given `classes` order, else the sorted class names over *all* XMLs
    in the folder (so train and test converted separately agree), numbered from 1. Boxes with zero
    area after clipping to the image are skipped and counted; `difficult` objects are kept.
    Every file is read before anything is written: a bad one leaves `out_path` as it was.
    """
    voc_root = Path(voc_root) if voc_root else None
    annotations_dir = Path(annotations_dir) if annotations_dir else voc_root / "Annotations"
    images_dir = Path(images_dir) if images_dir else voc_root / "JPEGImages"
    for d in (annotations_dir, images_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found")
    names = _image_names(voc_root, split, annotations_dir) if voc_root else \
        sorted(p.stem for p in annotations_dir.glob("*.xml"))
    if not names:
        raise DataError(f"{annotations_dir}: no .xml annotations")
    if classes is None:
        classes = sorted({o["name"] for p in annotations_dir.glob("*.xml") for o in read_voc_xml(p)["objects"]})
    class_id = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    skipped, clipped = 0, 0
    for image_id, name in enumerate(names, start=1):
        xml_path = annotations_dir / f"{name}.xml"
        if not xml_path.is_file():
            raise DataError(f"{xml_path}: annotation file not found (listed in split '{split}')")
        voc = read_voc_xml(xml_path)
        width, height = voc["width"], voc["height"]
        images.append({"id": image_id, "file_name": voc["file_name"], "width": width, "height": height})
        for obj in voc["objects"]:
            if obj["name"] not in class_id:
                raise DataError(f"{xml_path}: object name '{obj['name']}' is not in --classes")
            x0, y0, x1, y1 = obj["box"]
            cx0, cy0 = min(max(x0, 0), width), min(max(y0, 0), height)
            cx1, cy1 = min(max(x1, 0), width), min(max(y1, 0), height)
            if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
                skipped += 1
                continue
            clipped += (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
            w, h = cx1 - cx0, cy1 - cy0
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": class_id[obj["name"]], "bbox": [cx0, cy0, w, h],
                                "area": w * h, "iscrowd": 0, "difficult": obj["difficult"]})
    categories = [{"id": i, "name": n} for n, i in class_id.items()]
    data = {"images": images, "annotations": annotations, "categories": categories,
            "info": {"description": f"converted from {annotations_dir}",
                     "image_dir": str(images_dir.resolve())}}
    if out_path is not None:
        write_json(data, out_path)
    return {"out": str(out_path), "images": len(images), "annotations": len(annotations),
            "classes": classes, "skipped_degenerate": skipped, "clipped": int(clipped),
            "image_dir": str(images_dir)}
