"""The numba COCO AP equals pycocotools COCOeval's on the same detections, edge cases included."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from nascli.evaluate import METRICS, coco_ap, fast_coco_ap


def _coco(dataset) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = dataset
        c.createIndex()
    return c


def random_set(seed, images=15, classes=3, crowd=0.0, max_objects=6, tie_decimals=2):
    """Ground truth with random sizes across small/medium/large, jittered true positives, false
    positives, rounded scores (many ties) and `area` fields that differ from the box area."""
    rng = np.random.default_rng(seed)
    imgs = [{"id": 10 + 3 * i, "width": 300, "height": 300, "file_name": f"{i}.png"} for i in range(images)]
    cats = [{"id": 2 * c + 1, "name": f"c{c}"} for c in range(classes)]
    anns, dets = [], []
    for im in imgs:
        for _ in range(rng.integers(0, max_objects + 1)):
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(2, 150, 2)
            c = cats[rng.integers(classes)]["id"]
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h * rng.uniform(0.7, 1.1), "iscrowd": int(rng.random() < crowd)})
            for _ in range(rng.integers(0, 4)):
                dets.append({"image_id": im["id"], "category_id": c, "score": float(np.round(rng.random(), tie_decimals)),
                             "bbox": [x + rng.normal(0, 4), y + rng.normal(0, 4), w * rng.uniform(0.7, 1.3),
                                      h * rng.uniform(0.7, 1.3)]})
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 250, 2)
            w, h = rng.uniform(1, 80, 2)
            dets.append({"image_id": im["id"], "category_id": cats[rng.integers(classes)]["id"],
                         "score": float(np.round(rng.random(), tie_decimals)), "bbox": [x, y, w, h]})
    return _coco({"images": imgs, "categories": cats, "annotations": anns}), dets


def assert_same(gt, dets):
    ours, ref = fast_coco_ap(gt, dets), coco_ap(gt, dets)
    for m in METRICS:
        assert ours[m] == pytest.approx(ref[m], abs=1e-12), m


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("crowd", [0.0, 0.25])
def test_equals_pycocotools_on_random_detections(seed, crowd):
    assert_same(*random_set(seed, crowd=crowd))


def test_equals_pycocotools_with_more_than_100_detections_per_image():
    gt, dets = random_set(0, images=3, classes=1, max_objects=40)
    rng = np.random.default_rng(1)
    dets += [{"image_id": gt.dataset["images"][0]["id"], "category_id": 1, "score": float(rng.random()),
              "bbox": [*rng.uniform(0, 200, 2), *rng.uniform(5, 60, 2)]} for _ in range(250)]
    assert_same(gt, dets)


def test_equals_pycocotools_on_a_real_detectors_output(tiny_checkpoint, tiny_coco):
    """Detections of the tiny trained FCOS on its own data (low scores, clustered boxes)."""
    import torch

    from nascli.data.coco import CocoDetection
    from nascli.evaluate import coco_results, detect, eval_transform, load_detector
    from nascli.train import collate

    model, ckpt = load_detector(tiny_checkpoint)
    model.decoder.score_thresh = 0.0
    data = CocoDetection(tiny_coco[0], None, eval_transform(ckpt))
    images, targets = collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        dets = coco_results(detect(model, images, targets, "cpu"), targets, data.class_ids)
    assert len(dets) > 100
    assert_same(data.coco, dets)


def test_edge_cases_no_detections_and_classes_without_ground_truth():
    gt, dets = random_set(3)
    # no detections at all: every class with ground truth scores 0 (nascli's coco_ap convention)
    assert fast_coco_ap(gt, []) == coco_ap(gt, []) == {m: 0.0 for m in METRICS}
    # a class without any ground truth is left out of the mean (its precision is -1)
    dataset = dict(gt.dataset)
    dataset["categories"] = [*dataset["categories"], {"id": 99, "name": "never"}]
    gt99 = _coco(dataset)
    extra = [{"image_id": dataset["images"][0]["id"], "category_id": 99, "score": 0.9, "bbox": [1, 1, 10, 10]}]
    assert_same(gt99, dets + extra)
    # no ground truth for any class: every metric is undefined (-1), as COCOeval reports
    empty = _coco({**dataset, "annotations": []})
    assert fast_coco_ap(empty, dets) == coco_ap(empty, dets) == {m: -1.0 for m in METRICS}


def test_perfect_detections_score_one():
    gt, _ = random_set(5, crowd=0.0)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]]
    assert fast_coco_ap(gt, dets)["AP"] == pytest.approx(1.0)


def test_detection_on_an_unknown_image_is_a_one_line_error():
    gt, dets = random_set(0)
    with pytest.raises(Exception, match="field 'image_id' 12345"):
        fast_coco_ap(gt, [{**dets[0], "image_id": 12345}])


def _duplicated(gt, dets, picks):
    """The images at `picks` (sorted-id positions, repeats allowed) as a new dataset of distinct
    copies, in that order: what a bootstrap draw stands for."""
    ids = sorted(gt.getImgIds())
    images, anns, out = [], [], []
    for n, k in enumerate(picks):
        old = ids[k]
        images.append({**gt.imgs[old], "id": n + 1})
        anns += [{**a, "id": len(anns) + 1 + i, "image_id": n + 1} for i, a in enumerate(gt.imgToAnns[old])]
        out += [{**d, "image_id": n + 1} for d in dets if d["image_id"] == old]
    return _coco({"images": images, "categories": list(gt.cats.values()), "annotations": anns}), out


@pytest.mark.parametrize("seed", range(3))
def test_a_resample_scores_what_cocoeval_gives_the_duplicated_images(seed):
    """The bootstrap matches every image once and re-accumulates per draw; a draw's AP must equal
    pycocotools' on a dataset holding those images as distinct copies in that order. Rounded
    scores tie often, and COCOeval breaks ties by image order: the draws here keep images in
    ascending order, as the duplicated dataset does."""
    from nascli.evaluate import kernel_arrays
    from nascli.kernels import resampled_ap

    gt, dets = random_set(seed, crowd=0.2, tie_decimals=6)
    rng = np.random.default_rng(seed)
    n = len(gt.getImgIds())
    draws = np.vstack([np.arange(n), np.sort(rng.integers(0, n, n)), np.sort(rng.integers(0, n, n))])
    ours = resampled_ap(*kernel_arrays(gt, dets)[:-1], n, draws)
    assert ours[0] == pytest.approx(coco_ap(gt, dets)["AP"], abs=1e-12)
    for row, ap in zip(draws[1:], ours[1:]):
        assert ap == pytest.approx(coco_ap(*_duplicated(gt, dets, row))["AP"], abs=1e-12)


def test_image_bootstrap_interval_excludes_zero_only_for_a_real_difference():
    from nascli.evaluate import image_bootstrap, resampled_aps

    def bootstrap(arm, control):  # every run resampled alike (the same seed): paired
        return image_bootstrap([resampled_aps(gt, d, draws=300) for d in arm],
                               [resampled_aps(gt, d, draws=300) for d in control])

    gt, dets = random_set(5, images=40, classes=2)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt.dataset["annotations"]]
    better = bootstrap([perfect, perfect], [dets, dets])
    assert better["low"] > 0 and better["difference"] > better["low"] and better["draws"] == 300
    same = bootstrap([dets], [dets])
    assert same["low"] == same["high"] == same["difference"] == 0
    ids = sorted(gt.getImgIds())
    half = set(ids[::2])  # each arm perfect on one half of the images and mediocre on the other

    def mixed(on):
        return [d for d in perfect if (d["image_id"] in half) == on] + \
            [d for d in dets if (d["image_id"] in half) != on]

    tie = bootstrap([mixed(True)], [mixed(False)])
    assert tie["low"] < 0 < tie["high"] and tie["high"] - tie["low"] > 5  # AP points
