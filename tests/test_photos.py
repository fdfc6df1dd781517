"""Photos from phones and the web: what `check` finds, what `data clean` drops, and that train,
cache-features and eval read each file by the one policy of data/photos.py."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from nascli.data.coco import CocoDetection
from nascli.data.photos import ORIENTATION_TAG, FactsMemory, inspect, read_photo, scan
from nascli.errors import DataError
from nascli.inputs import check

BOX = [8, 20, 16, 12]  # x, y, w, h on the upright (displayed) photo of turned.jpg


def _jpeg(image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **kw)
    return buffer.getvalue()


def _scene(width, height, box=None) -> Image.Image:
    """A dark photo with a noisy texture (so JPEG has bytes to lose) and a white box."""
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    if box:
        x, y, w, h = box
        pixels[y:y + h, x:x + w] = 255
    return Image.fromarray(pixels)


def _turned(displayed: Image.Image) -> bytes:
    """The displayed photo stored as a phone does: pixels turned, EXIF orientation 6 (turn 90° clockwise)."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    return _jpeg(displayed.transpose(Image.Transpose.ROTATE_90), exif=exif)


@pytest.fixture
def photo_set(tmp_path):
    """One of each thing photos from the wild carry, as a COCO json whose images lie beside it."""
    root = tmp_path / "wild"
    (root / "images").mkdir(parents=True)
    good = _jpeg(_scene(64, 48, [4, 4, 20, 20]))
    files = {
        "good.jpg": (good, (64, 48), [[4, 4, 20, 20]]),
        "truncated.jpg": (good[:len(good) // 2], (64, 48), [[4, 4, 20, 20]]),
        "empty.jpg": (b"", (64, 48), [[4, 4, 10, 10]]),
        "cmyk.jpg": (_jpeg(_scene(64, 48).convert("CMYK")), (64, 48), [[10, 10, 10, 10]]),
        "turned.jpg": (_turned(_scene(48, 64, BOX)), (48, 64), [BOX]),
        "border.jpg": (good, (64, 48), [[50, 30, 30, 30], [70, 10, 5, 5]]),  # past the border; outside
        "nobox.jpg": (good, (64, 48), []),
        "small.jpg": (_jpeg(_scene(32, 24)), (64, 48), [[4, 4, 20, 20]]),  # resized after annotation
    }
    deep = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, "PNG")
    files["deep.png"] = (buffer.getvalue(), (64, 48), [[2, 2, 30, 30]])
    images, annotations = [], []
    for i, (name, (raw, (w, h), boxes)) in enumerate(files.items(), start=1):
        (root / "images" / name).write_bytes(raw)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        annotations += [{"id": len(annotations) + 1, "image_id": i, "category_id": 1, "bbox": b, "iscrowd": 0}
                        for b in boxes]
    path = root / "all.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


def _kinds(report: dict) -> dict:
    found = {}
    for f in report["findings"]:
        found.setdefault(f["file"].rsplit("/", 1)[-1], set()).add(f["kind"])
    return found


def test_check_decodes_every_photo_and_names_each_problem(photo_set):
    r = check(photo_set)
    assert _kinds(r) == {"truncated.jpg": {"truncated"}, "empty.jpg": {"unreadable"}, "cmyk.jpg": {"mode"},
                         "deep.png": {"mode"}, "turned.jpg": {"exif"}, "border.jpg": {"clipped", "dropped"},
                         "nobox.jpg": {"no box"}, "small.jpg": {"size"}}
    assert r["unusable"] == 3  # truncated, empty, resized: what the commands would refuse
    turned = next(f for f in r["findings"] if f["kind"] == "exif")
    assert "turned upright (its declared size is the upright one)" in turned["detail"]
    small = next(f for f in r["findings"] if f["kind"] == "size")
    assert "decodes to 32x24 but the json declares 64x48 (proportional)" in small["detail"]


def test_exif_orientation_puts_the_box_on_the_pixels_the_annotator_saw(photo_set):
    """Declared upright (48x64): the stored 64x48 pixels are turned before the box applies; the same
    file declared at its stored size is left as stored (its annotation was drawn on those pixels)."""
    ds = CocoDetection(photo_set)
    image_id = next(i for i in ds.image_ids if ds.coco.imgs[i]["file_name"] == "turned.jpg")
    pixels = np.asarray(ds.load_image(image_id)).mean(axis=2)
    x, y, w, h = BOX
    assert pixels.shape == (64, 48)
    assert pixels[y + 2:y + h - 2, x + 2:x + w - 2].mean() > 200 and pixels[:y - 2].mean() < 60
    stored = read_photo(photo_set.parent / "images/turned.jpg", declared=(64, 48), dataset=photo_set)
    assert stored.size == (64, 48)
    assert read_photo(photo_set.parent / "images/turned.jpg").size == (48, 64)  # predict: a bare photo, upright


def test_sixteen_bit_and_cmyk_become_8_bit_rgb_not_white(photo_set):
    deep = read_photo(photo_set.parent / "images/deep.png")
    grey = np.asarray(deep)[..., 0].astype(int)
    assert deep.mode == "RGB" and grey.min() == 0 and grey.max() == 255 and 100 < grey.mean() < 155
    assert read_photo(photo_set.parent / "images/cmyk.jpg").mode == "RGB"


def test_commands_refuse_at_start_and_clean_makes_the_pipeline_run(photo_set, tmp_path, tiny_config, run_cli):
    from nascli.train import train

    with pytest.raises(DataError, match=r"truncated\.jpg: truncated .*3 of 9 images .*nascli data clean") as e:
        train(tiny_config(photo_set, tmp_path / "refused", epochs=1))
    assert "\n" not in str(e.value) and not (tmp_path / "refused" / "last.pt").exists()
    code, out, _ = run_cli("check", photo_set)
    assert code == 2 and "NOT usable" in out and "would stop train" in out
    clean = tmp_path / "elsewhere" / "clean.json"
    code, out, _ = run_cli("data", "clean", photo_set, "--out", clean)
    assert code == 0 and out.count("dropped: ") == 2 and "rescaled 1 images" in out
    data = json.loads(clean.read_text())
    assert sorted(im["file_name"] for im in data["images"]) == [
        "border.jpg", "cmyk.jpg", "deep.png", "good.jpg", "nobox.jpg", "small.jpg", "turned.jpg"]
    small = next(im for im in data["images"] if im["file_name"] == "small.jpg")
    assert (small["width"], small["height"]) == (32, 24)
    assert [a["bbox"] for a in data["annotations"] if a["image_id"] == small["id"]] == [[2, 2, 10, 10]]
    border = next(im for im in data["images"] if im["file_name"] == "border.jpg")
    assert [a["bbox"] for a in data["annotations"] if a["image_id"] == border["id"]] == [[50, 30, 14, 18]]
    code, out, _ = run_cli("check", clean)  # the json elsewhere still finds its images
    assert code == 0 and "ok (coco;" in out
    result = train(tiny_config(clean, tmp_path / "trained", epochs=1))
    assert len(result["history"]) == 1
    code, _, _ = run_cli("data", "clean", photo_set, "--out", photo_set)
    assert code == 2 and json.loads(photo_set.read_text())["images"][1]["file_name"] == "truncated.jpg"


def test_a_second_scan_decodes_only_what_changed(photo_set, tmp_path, monkeypatch):
    import nascli.data.photos as photos

    files = sorted((photo_set.parent / "images").iterdir())
    memory = FactsMemory(tmp_path / "facts.sqlite")
    first = scan(files, memory=memory)
    decoded = []
    monkeypatch.setattr(photos, "inspect", lambda p: decoded.append(p) or inspect(p))
    assert scan(files, memory=memory) == first and decoded == []
    good = photo_set.parent / "images/good.jpg"
    good.write_bytes(good.read_bytes()[:100])  # rewritten: another size, another mtime
    again = scan(files, memory=memory)
    assert [str(p) for p in decoded] == [str(good)] and again[str(good)].error.startswith("truncated")


def test_exif_convention_follows_the_evidence_and_a_stated_one(photo_set):
    from nascli.data.photos import PhotoFacts, convention

    turned = PhotoFacts(64, 48, "RGB", 6)
    half_turn = PhotoFacts(64, 48, "RGB", 3)
    records = [{"width": 64, "height": 48}, {"width": 64, "height": 48}, {"width": 48, "height": 64}]
    facts = [turned, turned, half_turn]
    by_record = lambda r: facts[records.index(r)] if r in records else None  # noqa: E731
    data = {"images": [records[0], records[2]]}
    assert convention({"images": records[:2]}, lambda r: turned)[0] is False  # both declared stored
    assert convention({"images": [records[2]]}, lambda r: turned)[0] is True
    # a 180-degree turn cannot tell: only the first image votes, for stored pixels
    assert convention(data, by_record) == (False, "1 of 1 images whose sizes tell were annotated on stored pixels")
    assert convention({"images": [records[2]]}, by_record)[0] is True  # no evidence: upright, as displayed
    assert convention({"images": [records[0]], "info": {"exif_orientation": "upright"}}, lambda r: turned)[0] is True
    with pytest.raises(DataError, match="info.exif_orientation is 'sideways'"):
        convention({"images": records, "info": {"exif_orientation": "sideways"}}, lambda r: turned)
