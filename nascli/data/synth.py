"""The built-in default dataset: synthetic shapes that make the neck matter.

Why these choices: the class is the *shape* (colour is drawn independently of it), object sizes are
log-uniform from 1/8 of the image side (16 px at 128: twice the P3 stride) to half of it, at most 6
to an image, so that a from-scratch detector learns it on a CPU budget (measured: objects from 4 px
and 15 to an image left the 12-epoch demo baseline at AP 1.4); objects overlap and are cut by the
border, and the background is textured clutter with distractor strokes, so a detector cannot
succeed by thresholding colour or edges.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .coco import write_json

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "hexagon", "arrow")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float):
    """Vertices of a regular-ish polygon shape of radius r around (cx, cy), rotated by angle."""
    if kind == "triangle":
        radii, n = [r], 3
    elif kind == "hexagon":
        radii, n = [r], 6
    elif kind == "star":
        radii, n = [r, 0.45 * r], 10
    elif kind == "square":
        radii, n = [r], 4
    else:
        raise ValueError(kind)
    pts = []
    for k in range(n):
        a = angle + 2 * math.pi * k / n
        rr = radii[k % len(radii)]
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _draw_shape(draw: ImageDraw.ImageDraw, kind, cx, cy, r, angle, fill):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, round(0.4 * r)))
    elif kind == "cross":
        t = max(1.0, 0.3 * r)
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    elif kind == "arrow":
        t = max(1.0, 0.25 * r)
        draw.rectangle([cx - r, cy - t, cx, cy + t], fill=fill)
        draw.polygon([(cx, cy - r * 0.8), (cx + r, cy), (cx, cy + r * 0.8)], fill=fill)
    elif kind == "square":
        draw.polygon(_polygon(kind, cx, cy, r, math.pi / 4), fill=fill)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=fill)


def _background(rng, size: int, strokes: tuple[int, int]) -> Image.Image:
    """Low-frequency colour blobs + fine noise + distractor strokes (lines and small arcs)."""
    coarse = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*strokes))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        if rng.random() < 0.6:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 4)))
        else:
            r = float(rng.uniform(3, size / 6))
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], float(rng.uniform(0, 360)),
                     float(rng.uniform(0, 360)), fill=colour, width=int(rng.integers(1, 3)))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def render_image(rng, size: int, num_classes: int, max_objects: int = 6, min_object: float | None = None,
                 strokes: tuple[int, int] = (1, 6)):
    """One image and its visible boxes: (PIL image, [(x, y, w, h, class_index), ...]).

    Boxes are the tight box of each object's *visible* pixels after later objects are drawn on top
    and the border cuts it; objects less than 25% visible are left out of the annotations.
    `min_object` is the smallest object side in pixels (default size/8).
    """
    min_object = min_object if min_object is not None else size / 8
    img = _background(rng, size, strokes)
    draw = ImageDraw.Draw(img)
    instance = Image.new("I", (size, size), 0)
    idraw = ImageDraw.Draw(instance)
    objects = []
    for k in range(1, int(rng.integers(1, max_objects + 1)) + 1):
        cls = int(rng.integers(0, num_classes))
        side = math.exp(rng.uniform(math.log(min_object), math.log(size / 2)))
        cx, cy = (float(v) for v in rng.uniform(-0.2 * side, size + 0.2 * side, 2))
        angle = float(rng.uniform(0, 2 * math.pi))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        alone = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(alone), SHAPES[cls], cx, cy, side / 2, angle, 255)
        _draw_shape(draw, SHAPES[cls], cx, cy, side / 2, angle, colour)
        _draw_shape(idraw, SHAPES[cls], cx, cy, side / 2, angle, k)
        objects.append((cls, k, int(np.count_nonzero(np.asarray(alone)))))
    ids = np.asarray(instance)
    boxes = []
    for cls, k, drawn in objects:
        ys, xs = np.nonzero(ids == k)
        if len(xs) < max(4, 0.25 * drawn):
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        w, h = int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0
        if w >= 2 and h >= 2:
            boxes.append((x0, y0, w, h, cls))
    return img, boxes


def make_synthetic(out_dir, num_images: int = 660, image_size: int = 128, num_classes: int = 4,
                   max_objects: int = 6, seed: int = 0, min_object: float | None = None) -> Path:
    """Writes `images/*.png` and `instances.json` under out_dir; returns the json path."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng((seed, i))
        img, boxes = render_image(rng, image_size, num_classes, max_objects, min_object)
        name = f"{i:06d}.png"
        img.save(out_dir / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": image_size, "height": image_size})
        for x, y, w, h, cls in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": 0})
    categories = [{"id": c + 1, "name": SHAPES[c], "supercategory": "shape"} for c in range(num_classes)]
    return write_json({"images": images, "annotations": annotations, "categories": categories,
                       "info": {"description": "nascli synthetic shapes", "seed": seed}},
                      out_dir / "instances.json")
