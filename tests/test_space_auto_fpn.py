"""Auto-FPN: the mixed op, the supernet against its decoded paths, the resource term, decoding,
and an exact resume of the differentiable search."""

from pathlib import Path

import pytest
import torch

from nascli.config import ProxySpec
from nascli.errors import SpecError
from nascli.spaces import auto_fpn, load_genotype, space_for
from nascli.spaces.base import cost
from nascli.trial import TrialResult
from nascli.strategies.darts import DartsStrategy, resolve_lambda
from nascli.strategies.random import RandomStrategy

IN_CHANNELS = {"c3": 24, "c4": 40, "c5": 64}
SPEC = auto_fpn.SpaceSpec(layers=2, head_cells=2, width=8)


def _feats(batch=2, size=32):
    torch.manual_seed(5)
    return {lv: torch.randn(batch, c, size // s, size // s) for (lv, c), s in zip(IN_CHANNELS.items(), (8, 16, 32))}


def _one_hot(genotype):
    neck = torch.nn.functional.one_hot(torch.tensor(genotype.neck), len(auto_fpn.NECK_OPS)).float()
    head = torch.nn.functional.one_hot(torch.tensor(genotype.head), len(auto_fpn.HEAD_OPS)).float()
    return neck, head


@pytest.mark.parametrize("k", range(len(auto_fpn.NECK_OPS)))
def test_mixed_edge_with_one_hot_weights_is_the_chosen_op(k):
    torch.manual_seed(0)
    mixed = auto_fpn.Edge(auto_fpn.NECK_OPS, 8).eval()
    alone = auto_fpn.Edge((auto_fpn.NECK_OPS[k],), 8).eval()
    if k:  # the same op's weights
        alone.ops[0].load_state_dict(mixed.ops[k - 1].state_dict())
    x = torch.randn(2, 8, 12, 12)
    weights = torch.nn.functional.one_hot(torch.tensor(k), len(auto_fpn.NECK_OPS)).float()
    out = mixed(x, weights)
    torch.testing.assert_close(out, alone(x) if k else torch.zeros_like(x))


@pytest.mark.parametrize("seed", range(3))
def test_supernet_on_a_one_hot_path_equals_the_decoded_network(seed):
    torch.manual_seed(seed)
    net = auto_fpn.Supernet(SPEC, IN_CHANNELS, 3).eval()
    genotype = RandomStrategy(auto_fpn.Space(SPEC), seed=seed).ask(1)[0]
    path = net.extract(genotype).eval()
    feats = _feats()
    with torch.no_grad():
        want = net(feats, _one_hot(genotype))
        got = path(feats)
    for key in ("cls_logits", "box_ltrb", "ctr_logits"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in path.parameters()) < sum(p.numel() for p in net.parameters())


def test_decode_never_disconnects_a_level_or_a_head_node():
    net = auto_fpn.Supernet(SPEC, IN_CHANNELS, 3)
    with torch.no_grad():
        net.alpha_neck.zero_()
        net.alpha_neck[..., 0] = 5.0  # none wins every link ...
        net.alpha_neck[0, 1, 2, 3] = 1.0  # ... but one
        net.alpha_head.zero_()
        net.alpha_head[..., 0] = 5.0
    g = net.decode()
    assert auto_fpn.validate(g) is None
    assert g.neck[0][1] == (0, 0, 3)  # the strongest non-none link of the level is kept
    assert load_genotype(g.to_json()) == g


def test_validate_names_the_disconnected_level():
    g = RandomStrategy(auto_fpn.Space(SPEC), seed=0).ask(1)[0]
    bad = auto_fpn.Genotype(neck=((g.neck[0][0], (0, 0, 0), g.neck[0][2]),) + g.neck[1:], head=g.head)
    with pytest.raises(SpecError, match=r"neck\[0\]\[1\].*P4 would be disconnected"):
        load_genotype(bad.to_json())


def test_op_costs_order_none_below_skip_below_convolutions():
    c = dict(zip(auto_fpn.NECK_OPS, auto_fpn.op_costs(auto_fpn.NECK_OPS, 16).tolist()))
    assert c["none"] == 0 < c["skip"] < c["sep3x3"] < c["sep5x5"]
    assert max(c.values()) == pytest.approx(3.0)  # three measures, each normalised to 1


def test_lambda_presets_follow_the_paper():
    assert (resolve_lambda("small"), resolve_lambda("middle"), resolve_lambda("big")) == (0.2, 0.02, 0.002)
    assert resolve_lambda("0.5") == 0.5
    with pytest.raises(SpecError, match="--lambda huge"):
        resolve_lambda("huge")


def _strategy(cache, lam, epochs=3, seed=0, **options):
    spec = ProxySpec(space="auto-fpn", inputs=["c3", "c4", "c5"], width=8, layers=1, head_cells=1)
    return DartsStrategy(space_for(spec), seed=seed, cache=cache, epochs=epochs,
                         **{"lambda": lam, "batch_size": 4, "alpha_start": 0.0, "alpha_lr": 0.05, **options})


def test_the_resource_term_is_a_mean_per_edge_not_a_sum(tiny_cache):
    """One layer of 3x3 links and one head cell of 14 edges: with every op costing 1 the mean is 1
    (the paper's sum would be 23); with α one-hot on an op, the cost of that op."""
    net = _strategy(tiny_cache, 0.0).net
    ones = (torch.ones(len(auto_fpn.NECK_OPS)), torch.ones(len(auto_fpn.HEAD_OPS)))
    assert net.resource(ones).item() == pytest.approx(1.0)
    costs = (auto_fpn.op_costs(auto_fpn.NECK_OPS, 8), auto_fpn.op_costs(auto_fpn.HEAD_OPS, 8))
    with torch.no_grad():
        net.alpha_neck.zero_()[..., 3] = 50.0  # sep5x5 on every link
        net.alpha_head.zero_()[..., 7] = 50.0  # conv5x5 on every head edge
    expected = (9 * costs[0][3] + 14 * costs[1][7]) / 23
    assert net.resource(costs).item() == pytest.approx(expected.item(), rel=1e-4)


def test_the_collapse_guard_stops_where_none_and_skip_take_over(tiny_cache):
    guarded, unguarded = _strategy(tiny_cache, 0.0, alpha_lr=1e-9), _strategy(tiny_cache, 0.0, alpha_lr=1e-9,
                                                                              collapse_share=1.0)
    for s in (guarded, unguarded):
        with torch.no_grad():  # alpha on skip everywhere; a negligible alpha_lr keeps it there
            s.net.alpha_neck.zero_()[..., 1] = 10.0
            s.net.alpha_head.zero_()[..., 1] = 10.0
    assert guarded.ask(2) == [] and guarded.stopped.startswith("collapse: after epoch 1 none + skip are 100%")
    assert guarded.ask(1) == [] and guarded.epoch == 1  # stopped for good: no further epoch is trained
    resumed = _strategy(tiny_cache, 0.0)
    resumed.load_state_dict(guarded.state_dict())
    assert resumed.stopped == guarded.stopped and resumed.ask(1) == []
    [g] = unguarded.ask(1)  # collapse_share 1: the guard is off
    assert auto_fpn.op_shares(g)["skip"] == 1.0


def test_a_search_stopped_by_the_guard_keeps_its_reason_in_the_run(tiny_cache, tmp_path):
    """The guard fires on the first α epoch (collapse_share 0.01: almost any none or skip is too much): no
    trial, and the run says why (the state is saved though nothing was asked), also to the report."""
    from nascli.methods.auto_fpn import decoded_ops_panel
    from nascli.search import run_search
    from nascli.store import RunStore, unpack_state

    spec = tmp_path / "auto.yaml"
    spec.write_text("space: auto-fpn\ninputs: [c3, c4, c5]\nwidth: 8\nlayers: 1\nhead_cells: 1\n"
                    "darts: {batch_size: 4, alpha_start: 0.0, collapse_share: 0.01}\nrescore_top: 0\nrescore_seeds: 2\n")
    run_search("auto-fpn", str(spec), tiny_cache, 3, tmp_path / "run",
               evaluate_fn=lambda genotype, spec, cache, seed, data_seed: TrialResult("done", reward=-1.0))
    store = RunStore(tmp_path / "run", create=False)
    state, trials = unpack_state(store.load_state()), store.trials(control=False)
    store.close()
    assert trials == [] and state["stopped"].startswith("collapse: after epoch 1")
    assert decoded_ops_panel(tmp_path / "run", tmp_path)["notes"] == [f"the search stopped early: {state['stopped']}"]


def test_a_larger_lambda_decodes_to_fewer_flops_and_every_decoded_genotype_runs(tiny_cache):
    flops = {}
    for lam in (0.0, 2.0):
        strategy = _strategy(tiny_cache, lam, collapse_share=1.0)
        for genotype in (strategy.ask(1)[0] for _ in range(3)):
            decoder = auto_fpn.build(genotype, strategy.train.in_channels(), len(strategy.train.classes), 8)
            batch = next(strategy.train.batches(2, False))
            out = decoder(batch)
            assert torch.isfinite(sum(decoder.loss_from_batch(out, batch).values()))
        shapes = {lv: tuple(strategy.train.group[lv].shape[1:]) for lv in strategy.train.levels}
        flops[lam] = cost(decoder, shapes)["flops"]
    assert flops[2.0] < flops[0.0]


def test_resume_after_a_kill_mid_epoch_restores_alpha_and_weights_exactly(tiny_cache, tmp_path, monkeypatch):
    from nascli.store import unpack_state
    from nascli.search import run_search
    from nascli.store import RunStore

    spec = tmp_path / "auto.yaml"
    spec.write_text("space: auto-fpn\ninputs: [c3, c4, c5]\nwidth: 8\nlayers: 1\nhead_cells: 1\n"
                    "darts: {batch_size: 4, alpha_start: 0.0}\nrescore_top: 0\nrescore_seeds: 2\n")

    def fake_evaluate(genotype, spec, cache, seed, data_seed):  # the strategy is what is under test
        return TrialResult("done", reward=-sum(map(ord, genotype.to_json())) / 1e5)

    def final_state(run):
        store = RunStore(run, create=False)
        state, genotypes = unpack_state(store.load_state()), [t.genotype for t in store.trials(control=False)]
        store.close()
        return state, genotypes

    run_search("auto-fpn", str(spec), tiny_cache, 3, tmp_path / "whole", evaluate_fn=fake_evaluate)
    train_epoch, calls = DartsStrategy._train_epoch, []

    def killed_in_epoch_3(self):
        calls.append(self.epoch)
        if self.epoch == 2:
            raise KeyboardInterrupt  # kill -9 in the middle of the third epoch's training
        train_epoch(self)

    monkeypatch.setattr(DartsStrategy, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_search("auto-fpn", str(spec), tiny_cache, 3, tmp_path / "killed", evaluate_fn=fake_evaluate)
    monkeypatch.setattr(DartsStrategy, "_train_epoch", train_epoch)
    run_search("auto-fpn", str(spec), tiny_cache, None, tmp_path / "killed", resume=True, evaluate_fn=fake_evaluate)
    whole, killed = final_state(tmp_path / "whole"), final_state(tmp_path / "killed")
    assert killed[1] == whole[1]  # the same decoded genotype every epoch
    for key in whole[0]["net"]:
        assert torch.equal(whole[0]["net"][key], killed[0]["net"][key]), key
    assert whole[0]["epoch"] == killed[0]["epoch"] == 3

    from nascli.methods.auto_fpn import decoded_ops_panel  # the report's panel: one row per supernet epoch

    panel = decoded_ops_panel(tmp_path / "whole", tmp_path)
    [(columns, rows)] = panel["tables"].values()
    assert [r[0] for r in rows] == [1, 2, 3] and all(abs(sum(map(float, r[1:])) - 1) < 0.02 for r in rows)
    [figure] = panel["figures"].values()
    assert Path(figure).parent == tmp_path and Path(figure).read_bytes()[:4] == b"\x89PNG"


def test_lambda_is_taken_only_by_a_method_with_a_resource_weight_and_kept_on_resume(tiny_cache, tiny_proxy, tmp_path):
    """--lambda belongs to the method whose entry resolves it (Auto-FPN's); a resume keeps the run's."""
    from nascli.search import run_search

    fake = lambda genotype, spec, cache, seed, data_seed: TrialResult("done", reward=-1.0)  # noqa: E731
    with pytest.raises(SpecError, match=r"--method random has no resource weight \(one has: auto-fpn\)"):
        run_search("random", str(tiny_proxy), tiny_cache, 1, tmp_path / "random", evaluate_fn=fake, lam="small")
    spec = tmp_path / "auto.yaml"
    spec.write_text("space: auto-fpn\ninputs: [c3, c4, c5]\nwidth: 8\nlayers: 1\nhead_cells: 1\n"
                    "darts: {batch_size: 4, max_samples: 8}\nrescore_top: 0\nrescore_seeds: 2\n")
    run_search("auto-fpn", str(spec), tiny_cache, 1, tmp_path / "auto", evaluate_fn=fake, lam="small")
    with pytest.raises(SpecError, match="was searched with lambda 0.2"):
        run_search("auto-fpn", None, None, 1, tmp_path / "auto", resume=True, evaluate_fn=fake, lam="big")
    assert run_search("auto-fpn", None, None, 1, tmp_path / "auto", resume=True, evaluate_fn=fake, lam="0.2")
