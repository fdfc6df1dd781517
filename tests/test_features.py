"""The HDF5 feature cache: round trip, resume after a kill, reuse by key, corruption detection."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from nascli.errors import CacheError, SpecError
from nascli.cache import CachedSplit, build_cache, describe, pyramid_sizes, verify
from nascli.models.detector import batch_targets
from nascli.runtime import load_checkpoint


def _rebuild_kwargs(tiny_coco, tiny_checkpoint, out, **kw):
    return dict(data=tiny_coco[0], val=tiny_coco[1], out_dir=out, checkpoint=tiny_checkpoint, crop=64,
                min_size=64, batch_size=4, device="cpu", force=True, **kw)  # (the tiny baseline learns nothing)


def test_features_read_back_equal_the_backbone_output(tiny_cache, tiny_coco, tiny_checkpoint):
    from nascli.data.coco import CocoDetection
    from nascli.cache import crop_sample, crop_transform, to_chw_array
    from nascli.models.backbones import build_backbone

    ckpt = load_checkpoint(tiny_checkpoint)
    net = build_backbone(ckpt["model_args"]["backbone"]).eval()
    net.load_state_dict({k[9:]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")})
    ds = CocoDetection(tiny_coco[0], transform=crop_transform(64))
    with CachedSplit(tiny_cache, "train", in_memory=False) as split:
        assert len(split) == len(ds) == 12
        for i in (0, 5, 11):
            _, image, boxes, labels = crop_sample(ds, i, 1, 0, 64)
            with torch.no_grad():
                feats = net(torch.from_numpy(to_chw_array(image))[None])
            sample = split[i]
            for lv in ("c2", "c3", "c4", "c5"):
                torch.testing.assert_close(torch.from_numpy(sample[lv][0]).float(), feats[lv][0],
                                           rtol=2e-3, atol=2e-3)
            stored_boxes, stored_labels = split.boxes(i)
            np.testing.assert_allclose(stored_boxes, boxes)
            np.testing.assert_array_equal(stored_labels, labels)


def test_cached_targets_equal_the_kernel_on_stored_boxes(tiny_cache):
    with CachedSplit(tiny_cache, "val") as split:
        batch = next(split.batches(4, shuffle=False))
        targets = [dict(zip(("boxes", "labels"), split.boxes(i))) for i in range(4)]
        labels, ltrb, ctr = batch_targets(split.feature_sizes, targets)
    np.testing.assert_array_equal(batch["labels"].numpy(), labels)
    np.testing.assert_array_equal(batch["ltrb"].numpy(), ltrb)
    np.testing.assert_array_equal(batch["ctr"].numpy(), ctr)


@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_cover_every_sample_once(tiny_cache, in_memory):
    with CachedSplit(tiny_cache, "train", in_memory=in_memory) as split:
        seen = []
        for batch in split.batches(5, shuffle=True, seed=3):
            assert batch["c3"].dtype == torch.float32 and batch["c3"].shape[1:] == (128, 8, 8)
            assert batch["labels"].shape == (len(batch["index"]), sum(h * w for h, w in pyramid_sizes(64)))
            seen += batch["index"].tolist()
        assert sorted(seen) == list(range(12))
        assert split.in_memory is in_memory


def test_same_request_reuses_and_a_different_one_never_mixes(tiny_cache, tiny_coco, tiny_checkpoint, tmp_path):
    out = Path(tiny_cache).parent
    again = build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, out))
    assert again["reused"] and again["path"] == tiny_cache
    other = build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, out, seed=1, levels=("c3", "c4", "c5")))
    assert not other["reused"] and other["path"] != tiny_cache
    assert describe(other["path"])["key_fields"]["seed"] == 1


def test_resume_after_a_kill_recomputes_only_the_rest(tiny_coco, tiny_checkpoint, tmp_path):
    calls = []

    def killed_after_two_batches(event):
        calls.append(event)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path / "a"), on_progress=killed_after_two_batches)
    partial = list((tmp_path / "a").glob("*.partial"))
    assert len(partial) == 1 and not list((tmp_path / "a").glob("*.h5"))
    resumed = build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path / "a"))
    assert resumed["computed_samples"] == 16 - 8
    straight = build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path / "b"))
    assert straight["computed_samples"] == 16
    with h5py.File(resumed["path"]) as a, h5py.File(straight["path"]) as b:
        for name in ("train/c2", "train/c5", "val/fcos/ltrb", "val/image_id"):
            np.testing.assert_array_equal(a[name][:], b[name][:])
    verify(resumed["path"])


def test_truncated_foreign_altered_and_interrupted_files_are_refused(tiny_cache, tmp_path):
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(open(tiny_cache, "rb").read()[:5000])
    with pytest.raises(CacheError, match="t.h5: not a readable HDF5 file"):
        verify(truncated)
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="f.h5: attribute 'format'"):
        CachedSplit(foreign)
    altered = tmp_path / "a.h5"
    shutil.copy(tiny_cache, altered)
    with h5py.File(altered, "a") as f:
        f["train/c4"][3, 0, 0, 0] += 1
    with pytest.raises(CacheError, match="checksum of 'train/c4' does not match"):
        verify(altered)
    interrupted = tmp_path / "i.h5"
    shutil.copy(tiny_cache, interrupted)
    with h5py.File(interrupted, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(CacheError, match="build was interrupted"):
        describe(interrupted)
    assert verify(tiny_cache)["ok"]


def test_image_level_stores_uint8_crops(tiny_coco, tiny_checkpoint, tmp_path):
    r = build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path, levels=("images",)))
    with h5py.File(r["path"]) as f:
        assert f["train/images"].dtype == np.uint8 and f["train/images"].shape == (12, 3, 64, 64)
        assert "train/c2" not in f
    verify(r["path"])


def test_bad_requests_are_user_errors(tiny_coco, tiny_checkpoint, tmp_path):
    with pytest.raises(SpecError, match="multiple of 32"):
        build_cache(**{**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path), "crop": 70})
    with pytest.raises(SpecError, match="--levels"):
        build_cache(**_rebuild_kwargs(tiny_coco, tiny_checkpoint, tmp_path, levels=("c9",)))
    with pytest.raises(SpecError, match="random features"):
        build_cache(tiny_coco[0], tiny_coco[1], out_dir=tmp_path, backbone="resnet18", crop=64, device="cpu")


def test_cli_info_verify_and_bad_file(run_cli, tiny_cache, tmp_path):
    code, out, _ = run_cli("cache-features", "--info", tiny_cache, "--json")
    assert code == 0 and json.loads(out)["splits"]["val"]["samples"] == 4
    code, out, _ = run_cli("cache-features", "--verify", tiny_cache)
    assert code == 0 and "ok" in out
    (tmp_path / "junk.h5").write_bytes(b"junk")
    code, _, err = run_cli("cache-features", "--verify", tmp_path / "junk.h5")
    assert code == 2 and "junk.h5" in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_trained_on_meta_val_images_is_refused(tiny_coco, tiny_config, tmp_path, run_cli):
    """The baseline whose features the search trains on must not have seen meta-val: train one on
    train + val (the whole of trainval.json) and cache-features refuses it, naming the field."""
    from nascli.train import train

    trainval = tiny_coco[0].parent / "trainval.json"
    train(tiny_config(trainval, tmp_path / "leaky", epochs=1))
    ckpt = tmp_path / "leaky" / "last.pt"
    assert len(load_checkpoint(ckpt)["train_images"]) == 16
    code, _, err = run_cli("cache-features", "--data", tiny_coco[0], "--val", tiny_coco[1], "--checkpoint", ckpt,
                           "--crop", 64, "--out", tmp_path / "cache", "--device", "cpu", "--force")
    assert code == 2 and "field 'train_images' includes 4 of the 4 meta-val images" in err  # --force is not for leaks
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())

def test_batches_of_repeated_indices_read_the_same_from_disk_as_from_memory(tiny_cache):
    """A bootstrap subset (BatchNorm recalibration) repeats samples; h5py alone refuses that."""
    import numpy as np

    from nascli.cache import CachedSplit

    indices = np.array([0, 0, 2, 5, 5, 5, 7])
    on_disk = list(CachedSplit(tiny_cache, "train", in_memory=False).batches(4, False, indices=indices))
    in_ram = list(CachedSplit(tiny_cache, "train", in_memory=True).batches(4, False, indices=indices))
    assert [b["index"].tolist() for b in on_disk] == [[0, 0, 2, 5], [5, 5, 7]]
    for a, b in zip(on_disk, in_ram):
        assert all(torch.equal(a[k], b[k]) for k in a)
