"""How long `nascli check` takes on 2,000 photos, against decoding them one by one as PIL does.

Writes 2,000 JPEGs at BCCD's size (640x480, textured so they compress like photos) to a
temporary folder and times, in one run: the reference (a loop of `Image.open(p).load()` on one
thread), `check`'s first scan (every file decoded, threads on the usable cores), and a second
scan (every file remembered by size and mtime). `python -m benchmarks.bench_check --out
benchmarks/check.json` (or `make bench-check`); run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, count: int, size=(640, 480)) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    images = []
    for i in range(count):
        pixels = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
        name = f"{i:05d}.jpg"
        Image.fromarray(pixels).save(folder / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "width": size[0], "height": size[1]})
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 50, 40]}
                   for i in range(count)]
    path = folder / "all.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--out", default="benchmarks/check.json")
    args = parser.parse_args()
    from nascli.inputs import check
    from nascli.runtime import usable_cores

    with tempfile.TemporaryDirectory() as folder:
        os.environ["XDG_CACHE_HOME"] = folder  # a fresh memory of decoded files
        path = write_photos(Path(folder), args.images)
        started = time.perf_counter()
        for p in sorted(Path(folder).glob("*.jpg")):
            with Image.open(p) as image:
                image.load()
        reference = time.perf_counter() - started
        started = time.perf_counter()
        first = check(path)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        check(path)
        warm = time.perf_counter() - started
    assert first["unusable"] == 0
    result = {"images": args.images, "size": [640, 480], "cores": usable_cores(),
              "pil_one_thread_s": round(reference, 2), "check_first_s": round(cold, 2),
              "check_second_s": round(warm, 2), "first_vs_pil": round(reference / cold, 2),
              "second_vs_pil": round(reference / warm, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
