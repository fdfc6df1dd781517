"""Photos as every command reads them, and what decoding each file found (remembered per file).

The policy (docs/usage.md, "Photos"), the same for train, cache-features, eval and predict:

- A file that does not decode completely (unreadable, empty, truncated) is refused, never padded
  with grey: its one-line error names the file and `nascli data clean`, which drops it.
- EXIF orientation: a box must land on the pixels the annotation tool showed. An image whose
  declared size (json width/height, VOC <size>) is its upright size but not its stored one was
  annotated upright; the reverse, on the stored pixels. Images whose sizes cannot tell (a 180°
  turn, a mirror, a square photo) follow the dataset's `info.exif_orientation` when set, else the
  majority of the images whose sizes do tell, else upright (what phones, browsers and most
  annotation tools show). `predict` reads bare photos upright.
- 16-bit images are scaled to 8 bits (PIL alone clips them to white); CMYK, palette, grey and
  alpha become RGB (alpha dropped).
- A decoded size (after orientation) other than the declared one is refused: the boxes are in the
  declared frame. `data clean` rescales the boxes when the two sizes are proportional.
"""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

ORIENTATION_TAG = 0x0112
TRANSPOSED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})  # ("I": how some Pillows open 16-bit PNGs)
CONVENTIONS = ("upright", "stored")
STATED = "exif_orientation"  # the json's info field that states the convention


@dataclass(frozen=True)
class PhotoFacts:
    """What decoding one file found: stored size, mode, EXIF orientation (1 = none), and why it
    cannot be used (None when it decodes completely)."""

    width: int = 0
    height: int = 0
    mode: str = ""
    orientation: int = 1
    error: str | None = None

    @property
    def upright_size(self) -> tuple[int, int]:
        size = (self.width, self.height)
        return size[::-1] if self.orientation in TRANSPOSED else size


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block: the pixels are still the photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode(path: Path) -> tuple[Image.Image | None, PhotoFacts]:
    """The fully decoded image (or None) and its facts; a truncated file is an error, not grey."""
    try:
        with Image.open(path) as image:
            facts = PhotoFacts(image.width, image.height, image.mode, _orientation(image))
            image.load()
            return image, facts
    except FileNotFoundError:
        return None, PhotoFacts(error="file not found")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        detail = str(e) or type(e).__name__
        kind = "truncated" if "truncated" in detail.lower() else "unreadable"
        return None, PhotoFacts(error=f"{kind} ({detail})")


def inspect(path) -> PhotoFacts:
    """Decodes one file completely and says what it found."""
    return _decode(Path(path))[1]


def annotated_upright(facts: PhotoFacts, declared: tuple[int, int] | None) -> bool | None:
    """What an image's declared size says about its annotation: True upright, False stored
    pixels, None when the sizes cannot tell."""
    if facts.orientation == 1 or declared is None:
        return None
    stored, upright = (facts.width, facts.height), facts.upright_size
    if stored == upright:
        return None
    return True if tuple(declared) == upright else False if tuple(declared) == stored else None


def convention(data: dict, facts_of) -> tuple[bool, str]:
    """(turn images upright when their sizes cannot tell, why): the json's info.exif_orientation,
    else the majority of the images whose sizes tell, else upright. `facts_of(image_record)` gives
    a PhotoFacts (or None when the file is unreadable)."""
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    stated = info.get(STATED)
    if stated is not None:
        if stated not in CONVENTIONS:
            raise DataError(f"info.{STATED} is {stated!r}; choose {' or '.join(CONVENTIONS)}")
        return stated == "upright", f"info.{STATED}"
    turned = [(record, facts) for record in data["images"]
              for facts in [facts_of(record)] if facts is not None and facts.orientation != 1]
    if not turned:
        return True, "no image has an EXIF orientation"
    votes = [annotated_upright(facts, (record["width"], record["height"])) for record, facts in turned]
    votes = [v for v in votes if v is not None]
    if votes:
        upright = 2 * sum(votes) >= len(votes)
        return upright, (f"{sum(votes) if upright else len(votes) - sum(votes)} of {len(votes)} "
                         f"images whose sizes tell were annotated {'upright' if upright else 'on stored pixels'}")
    return True, "assumed upright (no image's size tells)"


def turns_upright(facts: PhotoFacts, declared, default: bool) -> bool:
    """Whether this image is turned by its EXIF tag before its boxes apply."""
    if facts.orientation == 1:
        return False
    said = annotated_upright(facts, declared)
    return default if said is None else said


def decoded_size(facts: PhotoFacts, declared, default: bool) -> tuple[int, int]:
    """(width, height) the image has once read by the policy: upright or as stored."""
    return facts.upright_size if turns_upright(facts, declared, default) else (facts.width, facts.height)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled (not clipped), every other mode through PIL's conversion."""
    if image.mode in SIXTEEN_BIT:
        scaled = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(scaled.clip(0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def read_photo(path, *, declared: tuple[int, int] | None = None, upright_default: bool = True,
               dataset=None) -> Image.Image:
    """The RGB image a command works on, by the module's policy; `declared` (width, height) is
    what the dataset `dataset` says, checked after orientation."""
    path = Path(path)
    image, facts = _decode(path)
    clean = f"`nascli data clean {dataset} --out CLEAN.json`" if dataset else None
    if image is None:
        raise DataError(f"{path}: {facts.error.replace('unreadable', 'unreadable image', 1)}"
                        + (f"; {clean} drops it" if clean else ""))
    upright = turns_upright(facts, declared, upright_default)
    if upright:
        image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    if declared is not None and image.size != tuple(declared):
        raise DataError(f"{path}: decodes to {image.width}x{image.height}{' upright' if upright else ''} but "
                        f"{dataset} declares {declared[0]}x{declared[1]} (field images.width/height)"
                        + (f"; {clean} rescales its boxes or drops it" if clean else ""))
    return image


def header_facts(path) -> PhotoFacts | None:
    """Size, mode and orientation from the file's header alone (no decode); None if unreadable."""
    try:
        with Image.open(path) as image:
            return PhotoFacts(image.width, image.height, image.mode, _orientation(image))
    except Exception:
        return None


def facts_db_path() -> Path:
    """Where decoded facts are remembered: $XDG_CACHE_HOME/nascli (default ~/.cache/nascli)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "nascli" / "photos.sqlite"


class FactsMemory:
    """Facts per file keyed by its absolute path, valid while its size and mtime are unchanged;
    a memory that cannot be opened (a read-only home) just remembers nothing."""

    def __init__(self, path=None):
        self.db = None
        try:
            path = Path(path or facts_db_path())
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS facts (path TEXT PRIMARY KEY, size INTEGER, "
                            "mtime_ns INTEGER, facts TEXT)")
        except (OSError, sqlite3.Error):
            self.db = None

    def recall(self, path: str, stat) -> PhotoFacts | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute("SELECT size, mtime_ns, facts FROM facts WHERE path = ?", (path,)).fetchone()
            if row and row[0] == stat.st_size and row[1] == stat.st_mtime_ns:
                return PhotoFacts(**json.loads(row[2]))
        except (sqlite3.Error, ValueError, TypeError):
            return None
        return None

    def keep(self, entries) -> None:
        """entries: (path, stat, PhotoFacts)."""
        if self.db is None:
            return
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)",
                                    [(p, s.st_size, s.st_mtime_ns, json.dumps(asdict(f))) for p, s, f in entries])
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def scan(paths, workers: int | None = None, memory: FactsMemory | None = None) -> dict[str, PhotoFacts]:
    """Decodes every file (PIL decodes outside the GIL, so threads use the cores) unless its
    facts are remembered for the same size and mtime; returns {path as given: facts}."""
    from ..runtime import usable_cores

    own_memory = memory is None
    memory = memory or FactsMemory()
    found, todo = {}, []
    for path in dict.fromkeys(str(p) for p in paths):
        try:
            stat = os.stat(path)
        except (OSError, ValueError):
            found[path] = PhotoFacts(error="file not found")
            continue
        key = os.path.abspath(path)
        recalled = memory.recall(key, stat)
        if recalled is None:
            todo.append((path, key, stat))
        else:
            found[path] = recalled
    if todo:
        with ThreadPoolExecutor(workers or usable_cores()) as pool:
            decoded = list(pool.map(lambda item: inspect(item[0]), todo))
        memory.keep((key, stat, facts) for (_, key, stat), facts in zip(todo, decoded))
        found.update((path, facts) for (path, _, _), facts in zip(todo, decoded))
    if own_memory:
        memory.close()
    return found
