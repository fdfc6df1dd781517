"""Shared fixtures: a tiny synthetic COCO dataset and a tiny trained checkpoint (built once)."""

import os
import sys

import pytest
import torch

# `make test` runs two pytest workers on the 2-core machines: one torch thread each, since two
# processes with two threads each on 2 cores slow each other down many times over (the
# controller's small LSTM update: 2.5 s alone, 82 s beside one busy process). A single pytest
# keeps torch's default, which OMP_NUM_THREADS sets. Numba's kernels are held to as many threads
# as torch (runtime.set_threads): at numba's default a test ran 6x slower beside a busy core.
# What `check` remembers about each photo (data/photos.py) goes to a folder of this test session,
# not the user's ~/.cache.
if "NASCLI_TESTS_CACHE_HOME" not in os.environ:
    import tempfile

    os.environ["NASCLI_TESTS_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="nascli-tests-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    from nascli.runtime import set_threads

    set_threads(1)


def trained_like(net):
    """Random BatchNorm statistics and affine weights (eval mode), so that identities are not trivial."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """20 images of 64x64 px, 3 shape classes: 4 held out as test.json, the rest split 12 / 4 into
    meta-train / meta-val; returns (train_json, val_json) (test.json lies beside them)."""
    from nascli.data.split import split_coco
    from nascli.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("tiny")
    instances = make_synthetic(root / "synth", num_images=20, image_size=64, num_classes=3,
                               max_objects=4, seed=1)
    split_coco(instances, root / "trainval.json", root / "test.json", val=4, seed=0)
    split_coco(root / "trainval.json", root / "train.json", root / "val.json", val=4, seed=0)
    return root / "train.json", root / "val.json"


@pytest.fixture(scope="session")
def tiny_test(tiny_coco):
    """The tiny dataset's test split: images neither the baseline nor the search saw."""
    return tiny_coco[0].parent / "test.json"


def _tiny_config(data, out, **kw):
    """A TrainConfig for a model small enough to train in seconds on 64 px images."""
    from nascli.config import TrainConfig

    base = dict(data=str(data), out=str(out), backbone="resnet18", width=16, num_convs=1, epochs=1,
                batch_size=4, min_size=64, max_size=64, warmup_iters=2, lr=0.01, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def tiny_config():
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_coco, tmp_path_factory):
    from nascli.train import train

    out = tmp_path_factory.mktemp("ckpt")
    train(_tiny_config(tiny_coco[0], out, epochs=2))
    return out / "last.pt"


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Runs `nascli ARGS` through main() in-process; returns (exit_code, stdout, stderr)."""
    from nascli.cli import main
    from nascli.runtime import set_threads

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["nascli", *map(str, args)])
        code, threads = 0, torch.get_num_threads()  # commands set torch's threads (--threads): not the worker's
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            set_threads(threads)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_cache(tiny_coco, tiny_checkpoint, tmp_path_factory):
    """A c2..c5 cache of the tiny dataset through the tiny checkpoint's backbone (64 px crops)."""
    from nascli.cache import build_cache

    out = tmp_path_factory.mktemp("cache")
    r = build_cache(*tiny_coco, out_dir=out, checkpoint=tiny_checkpoint, crop=64, min_size=64,
                    batch_size=4, device="cpu", force=True)  # 2 epochs on 12 images learn nothing
    return r["path"]


TINY_PROXY = """
space: nas-fcos
inputs: [c2, c3, c4, c5]
width: 8
fpn_ops: [sep3x3, sep3x3_d3, skip]
head_ops: [sep3x3, skip]
head_blocks: 2
epochs: 1
batch_size: 6
lr: 0.001
rescore_top: 2
rescore_seeds: 2
controller: {batch: 2}
"""


@pytest.fixture
def tiny_proxy(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PROXY)
    return path


@pytest.fixture(scope="session")
def tiny_image_cache(tiny_coco, tiny_checkpoint, tmp_path_factory):
    """The tiny dataset's 64 px crops as uint8 images (backbone searches), from the tiny checkpoint."""
    from nascli.cache import build_cache

    out = tmp_path_factory.mktemp("image-cache")
    r = build_cache(*tiny_coco, out_dir=out, checkpoint=tiny_checkpoint, crop=64, min_size=64,
                    levels=("images",), batch_size=4, device="cpu", force=True)
    return r["path"]


#: Test files that take longest, started first: `make test` hands whole files to two workers in
#: collection order, so a slow file collected last would run alone at the end.
SLOW_FIRST = ("test_bench_methods.py", "test_executors.py", "test_device.py", "test_search_spnas.py", "test_space_auto_fpn.py",
              "test_search.py", "test_retrain.py", "test_strategies.py", "test_deploy.py", "test_latency.py")


def pytest_collection_modifyitems(items):
    from pathlib import Path

    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: file order kept
