"""Datasets: synthetic generator, VOC conversion (on real BCCD), split, stats, transforms."""

import json
from pathlib import Path

import numpy as np
import pytest

from nascli.data.coco import CocoDetection, Transform, dataset_stats, load_coco
from nascli.data.split import split_coco
from nascli.data.synth import SHAPES, make_synthetic
from nascli.data.voc import convert_voc
from nascli.errors import DataError, SpecError

BCCD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bccd" / "BCCD"
needs_bccd = pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not beside the checkout")


def test_synth_is_deterministic_and_seed_dependent(tmp_path):
    a = make_synthetic(tmp_path / "a", num_images=4, image_size=64, num_classes=3, seed=7)
    b = make_synthetic(tmp_path / "b", num_images=4, image_size=64, num_classes=3, seed=7)
    make_synthetic(tmp_path / "c", num_images=4, image_size=64, num_classes=3, seed=8)
    assert json.loads(a.read_text())["annotations"] == json.loads(b.read_text())["annotations"]
    assert (tmp_path / "a/images/000002.png").read_bytes() == (tmp_path / "b/images/000002.png").read_bytes()
    assert (tmp_path / "a/images/000002.png").read_bytes() != (tmp_path / "c/images/000002.png").read_bytes()


def test_synth_covers_classes_sizes_and_borders(tmp_path):
    path = make_synthetic(tmp_path, num_images=60, image_size=128, num_classes=4, seed=0)
    data = json.loads(path.read_text())
    anns = data["annotations"]
    assert [c["name"] for c in data["categories"]] == list(SHAPES[:4])
    assert {a["category_id"] for a in anns} == {1, 2, 3, 4}
    per_image = np.bincount([a["image_id"] for a in anns], minlength=61)[1:]
    assert per_image.max() <= 6
    sides = np.array([max(a["bbox"][2:]) for a in anns])
    # from 1/8 of the side (less where occluded or cut) to about half of it: learnable on a CPU budget
    assert np.median(sides) >= 20 and sides.max() >= 48 and (sides < 12).mean() < 0.15
    boxes = np.array([a["bbox"] for a in anns])
    touching = (boxes[:, 0] == 0) | (boxes[:, 1] == 0) | (boxes[:, 0] + boxes[:, 2] == 128) | \
        (boxes[:, 1] + boxes[:, 3] == 128)
    assert touching.any()  # objects cut by the border
    assert ((boxes[:, :2] >= 0) & (boxes[:, :2] + boxes[:, 2:] <= 128)).all()
    load_coco(path)  # valid COCO


def test_synth_colour_does_not_give_the_class_away(tmp_path):
    path = make_synthetic(tmp_path, num_images=40, image_size=96, num_classes=2, seed=3)
    from PIL import Image
    means = {1: [], 2: []}
    for a in json.loads(path.read_text())["annotations"]:
        x, y, w, h = a["bbox"]
        if w < 12 or h < 12:
            continue
        img = np.asarray(Image.open(tmp_path / "images" / f"{a['image_id'] - 1:06d}.png"), np.float32)
        cx, cy = x + w // 2, y + h // 2
        means[a["category_id"]].append(img[cy - 2:cy + 2, cx - 2:cx + 2].mean(axis=(0, 1)))
    m1, m2 = np.mean(means[1], 0), np.mean(means[2], 0)
    assert np.abs(m1 - m2).max() < 40  # both classes span the colour space alike


@needs_bccd
def test_convert_bccd_skips_the_two_zero_area_boxes(tmp_path):
    summary = convert_voc(BCCD, tmp_path / "all.json")
    assert summary["images"] == 364 and summary["skipped_degenerate"] == 2
    assert summary["classes"] == ["Platelets", "RBC", "WBC"]
    coco = load_coco(tmp_path / "all.json")
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in coco.anns.values())
    train = convert_voc(BCCD, tmp_path / "train.json", split="train")
    test = convert_voc(BCCD, tmp_path / "test.json", split="test")
    assert (train["images"], test["images"]) == (205, 72)
    cats = [json.loads((tmp_path / f).read_text())["categories"] for f in ("train.json", "test.json")]
    assert cats[0] == cats[1]  # stable class ids across separately converted splits
    ds = CocoDetection(tmp_path / "test.json")  # images resolve through info.image_dir
    image, target = ds[0]
    assert image.shape[0] == 3 and len(target["boxes"]) > 0


def test_convert_voc_errors_name_the_file(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation><size><width>10</width></size>")
    with pytest.raises(DataError, match=r"x\.xml: malformed XML"):
        convert_voc(tmp_path, tmp_path / "o.json", classes=["a"])
    with pytest.raises(DataError, match=r"Main/train\.txt: split file not found"):
        convert_voc(tmp_path, tmp_path / "o.json", split="train", classes=["a"])


def test_split_is_seeded_disjoint_and_complete(tiny_coco, tmp_path):
    train, val = tiny_coco
    whole = json.loads(train.read_text())["images"] + json.loads(val.read_text())["images"]
    src = tmp_path / "all.json"
    data = json.loads(train.read_text())
    data["images"] = whole
    data["annotations"] += json.loads(val.read_text())["annotations"]
    src.write_text(json.dumps(data))
    r1 = split_coco(src, tmp_path / "t1.json", tmp_path / "v1.json", val=0.25, seed=3)
    split_coco(src, tmp_path / "t2.json", tmp_path / "v2.json", val=0.25, seed=3)
    split_coco(src, tmp_path / "t3.json", tmp_path / "v3.json", val=0.25, seed=4)
    ids = {k: {im["id"] for im in json.loads((tmp_path / f"{k}.json").read_text())["images"]}
           for k in ("t1", "v1", "v2", "v3")}
    assert (r1["train_images"], r1["val_images"]) == (12, 4)
    assert ids["t1"].isdisjoint(ids["v1"]) and len(ids["t1"] | ids["v1"]) == 16
    assert ids["v1"] == ids["v2"] and ids["v1"] != ids["v3"]
    with pytest.raises(SpecError, match="empty split"):
        split_coco(src, tmp_path / "t.json", tmp_path / "v.json", val=16)


def test_stats_counts_by_coco_area(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 200}],
            "categories": [{"id": 3, "name": "x"}, {"id": 5, "name": "y"}],
            "annotations": [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]},
                            {"image_id": 1, "category_id": 3, "bbox": [0, 0, 32, 32]},
                            {"image_id": 1, "category_id": 5, "bbox": [0, 0, 100, 100]}]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    s = dataset_stats(tmp_path / "d.json")
    assert s["images"] == 1 and s["objects"] == 3
    assert s["classes"]["x"] == {"id": 3, "objects": 2, "small": 1, "medium": 1, "large": 0}
    assert s["classes"]["y"]["large"] == 1


def test_transform_keeps_boxes_on_the_same_pixels():
    from PIL import Image
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[20:40, 150:190] = 255  # one white box, x 150..190, y 20..40
    boxes, labels = np.array([[150, 20, 190, 40]], np.float32), np.array([1])
    t = Transform(min_size=50, max_size=1000, crop=40, flip=True)
    for seed in range(20):
        img, b, lab, scale = t(Image.fromarray(arr), boxes, labels, np.random.default_rng(seed))
        assert scale == 0.5 and img.size == (40, 40)
        out = np.asarray(img)[..., 0] > 127
        if len(b):
            x0, y0, x1, y1 = np.round(b[0]).astype(int)
            assert out[y0:y1, x0:x1].mean() > 0.8  # box still covers the white pixels
            assert out.sum() <= (x1 - x0 + 2) * (y1 - y0 + 2)
        else:
            assert out.sum() < 3  # box dropped only when the object left the crop


@pytest.mark.parametrize("content,match", [
    ("{not json", "malformed JSON"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "'images' is empty"),
    ('{"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}], "categories": [{"id": 1, "name": "a"}],'
     ' "annotations": [{"image_id": 1, "category_id": 9, "bbox": [0, 0, 1, 1]}]}',
     r"annotations\[0\]\.category_id 9 is not a known class id"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}',
     r"images\[0\]\.file_name is missing"),
])
def test_bad_coco_json_names_file_and_field(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_coco(p)
    assert str(p) in str(e.value)


def test_missing_image_files_stop_the_dataset_at_start(tiny_coco, tmp_path):
    """A json naming an image that is not on disk fails when the dataset opens (before a long job),
    naming the json, the image id and the path; `check` lists it as an error."""
    from nascli.inputs import check

    data = json.loads(Path(tiny_coco[0]).read_text())
    assert len(CocoDetection(tiny_coco[0])) == len(data["images"])  # the intact json opens
    gone = data["images"][2]
    gone["file_name"] = "moved/" + gone["file_name"]
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"images\[id={gone['id']}\]\.file_name -> .*moved/.* not found "
                                        rf"\(1 of {len(data['images'])} images missing") as e:
        CocoDetection(bad)
    assert str(bad) in str(e.value)
    r = check(bad, "coco")
    assert r["unusable"] == 1 and r["problems"]["missing"] == 1
    assert [f["image_id"] for f in r["findings"] if f["error"]] == [gone["id"]]


def test_image_dir_recorded_in_the_json_must_be_a_path(tiny_coco, tmp_path):
    data = json.loads(Path(tiny_coco[0]).read_text())
    data["info"] = {"image_dir": 7}
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"train\.json: info\.image_dir must be a folder path"):
        CocoDetection(bad)
    data["info"] = "not an object"  # ignored, as before: images resolve beside the json
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not found"):
        CocoDetection(bad)
