"""DetNAS end to end on cached image crops: the supernet's two path-wise phases resume exactly,
and evolution (or random sampling, the paper's Figure 2 baseline) scores paths of the same trained
supernet against the ShuffleNetV2 control."""

import json

import pytest
import torch

SPEC = """space: detnas
width: 16
batch_size: 4
rescore_top: 1
rescore_seeds: 2
supernet: {width: 0.25, depth: 0.5, pretrain_epochs: 1, finetune_epochs: 2, batch_size: 4, bn_samples: 8}
evolution: {population: 3, parents: 2, mutations: 1, crossovers: 1, generations: 2}
"""


@pytest.fixture
def detnas_spec(tmp_path):
    path = tmp_path / "detnas.yaml"
    path.write_text(SPEC)
    return path


def test_supernet_training_resumes_exactly_after_a_kill(tiny_image_cache, detnas_spec, tmp_path):
    from nascli.config import ProxySpec, load_spec
    from nascli.methods.detnas import train_supernet

    spec = load_spec(ProxySpec, detnas_spec)
    whole = train_supernet(tmp_path / "whole.pt", spec, tiny_image_cache, seed=2)
    assert [h["phase"] for h in whole["history"]] == ["pretrain", "finetune", "finetune"]

    def killed_in_the_last_epoch(event):
        if event["phase"].startswith("supernet finetune epoch 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(tmp_path / "cut.pt", spec, tiny_image_cache, seed=2, on_progress=killed_in_the_last_epoch)
    train_supernet(tmp_path / "cut.pt", spec, tiny_image_cache, seed=2)
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert a["state"] == b["state"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)


def test_evolution_and_random_score_paths_of_one_supernet_against_shufflenetv2(tiny_image_cache, detnas_spec,
                                                                               tiny_test, tmp_path, monkeypatch):
    from nascli.search import run_search
    from nascli.store import RunStore

    evolution = run_search("detnas", detnas_spec, tiny_image_cache, 4, tmp_path / "evolution", seed=0)
    # the paper's Figure 2: random sampling on the same trained supernet, named instead of copied
    random = run_search("random", detnas_spec, tiny_image_cache, 4, tmp_path / "random", seed=0,
                        supernet=tmp_path / "evolution")
    assert not (tmp_path / "random" / "supernet.pt").exists()
    for summary, run in ((evolution, "evolution"), (random, "random")):
        control = json.loads(summary["control"]["genotype"])
        assert control["space"] == "detnas" and set(control["choices"]) == {0}  # ShuffleNetV2: all 3x3
        assert summary["control"]["seeds"] == 2 and summary["finished"] == 4 and summary["noise"] > 0
        store = RunStore(tmp_path / run, create=False)
        genotypes = [tuple(json.loads(t.genotype)["choices"]) for t in store.trials(control=False)]
        store.close()
        assert len(set(genotypes)) == len(genotypes) == 4
    # one supernet, the same fresh seeds: the control's scores agree to the bit
    assert evolution["control"]["mean"] == random["control"]["mean"]
    # the random run records whose supernet it scored: its retraining starts from that one
    from nascli.methods import lookup

    meta = RunStore(tmp_path / "random", create=False).meta()
    assert lookup("random", "detnas").retrain_init(tmp_path / "random", meta) == \
        (tmp_path / "evolution" / "supernet.pt").resolve()

    import nascli.train as train_module
    from nascli.retrain import Promotion, retrain
    from nascli.spaces import load_genotype
    from nascli.methods.detnas import path_backbone_state

    starts, original = [], train_module.init_backbone

    def recording(model, checkpoint, genotype=None):  # the backbone weights retraining starts from
        original(model, checkpoint, genotype)
        starts.append({k: v.clone() for k, v in model.backbone.state_dict().items()})

    monkeypatch.setattr(train_module, "init_backbone", recording)
    r = retrain(tmp_path / "evolution", Promotion(top=1, val=tiny_test, epochs=1, lr=0.01, seeds=1, device="cpu"))
    assert [row["status"] for row in r["rows"]] == ["done", "done"] and len(starts) == 2
    for row, start in zip(r["rows"], starts):  # the control and the winner start from the supernet's path
        expected = path_backbone_state(load_genotype(row["genotype"]), tmp_path / "evolution" / "supernet.pt")
        assert start.keys() == expected.keys() and all(torch.equal(start[k], expected[k]) for k in expected)
