"""DetNAS: the ShuffleNetV2 supernet and its paths, the released DetNASNets (golden: shapes and a
parameter count derived block by block apart from the code), BN recalibration, and evolution."""

import json

import numpy as np
import pytest
import torch

from conftest import trained_like
from nascli.spaces import detnas, zoo
from nascli.spaces.detnas import CHOICES, Genotype, SpaceSpec, Supernet
from nascli.strategies.evolution import EvolutionStrategy


def _bn(c):
    return 2 * c


def _dw_pw(cin, cout, k):
    return cin * k * k + _bn(cin) + cin * cout + _bn(cout)


def _block_params(cin, cout, stride, choice):
    """The released shuffle_blocks.py, counted by hand: branch to (out - in) or out/2 channels,
    mid = out // 2, plus the stride-2 projection."""
    mid, name = cout // 2, CHOICES[choice]
    bin_, bout = (cin, cout - cin) if stride == 2 else (cin // 2, cout // 2)
    if name.startswith("shuffle"):
        k = int(name[-1])
        n = bin_ * mid + _bn(mid) + mid * k * k + _bn(mid) + mid * bout + _bn(bout)
    else:
        k = 3
        n = _dw_pw(bin_, mid, 3) + _dw_pw(mid, mid, 3) + _dw_pw(mid, bout, 3)
    return n + (_dw_pw(cin, cin, k) if stride == 2 else 0)


def _expected_params(g: Genotype) -> int:
    channels, repeats = detnas.LAYOUTS[g.layout][1], detnas.LAYOUTS[g.layout][0]
    n = 3 * 9 * channels[0] + channels[0] + _bn(channels[0])  # first_conv: conv with bias, BN
    i, cin = 0, channels[0]
    for r, cout in zip(repeats, channels[1:]):
        for k in range(r):
            n += _block_params(cin, cout, 2 if k == 0 else 1, g.choices[i])
            i, cin = i + 1, cout
    return n


@pytest.mark.parametrize("name,layout,blocks", [("detnasnet-fpn-300m", "small", 20), ("detnasnet-retinanet-300m", "small", 20),
                                                ("detnasnet-fpn-1.3g", "large", 40), ("shufflenetv2-20", "small", 20),
                                                ("shufflenetv2-40", "large", 40)])
def test_zoo_backbones_have_the_released_shapes_and_parameters(name, layout, blocks):
    g = zoo.get(f"zoo:{name}")
    assert g.layout == layout and len(g.choices) == blocks
    net = detnas.DetNASNet(g).eval()
    assert sum(p.numel() for p in net.parameters()) == _expected_params(g)
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 224, 224))
    widths = detnas.LAYOUTS[layout][1][1:]
    assert [(k, tuple(v.shape[1:])) for k, v in out.items()] == \
        [(f"c{s + 2}", (w, 224 // 2 ** (s + 2), 224 // 2 ** (s + 2))) for s, w in enumerate(widths)]


def test_released_flops_match_the_names():
    # backbone only; the released 1024-channel classifier conv (32 M / 48 M at 7x7) is not counted
    assert 250e6 < detnas.flops(detnas.FPN_300M) < 300e6
    assert 1.2e9 < detnas.flops(detnas.FPN_1_3G) < 1.3e9


@pytest.mark.parametrize("seed", range(3))
def test_a_supernet_path_equals_the_standalone_network_with_its_weights(seed):
    spec = SpaceSpec(width=0.5, depth=0.5)
    torch.manual_seed(seed)
    supernet = trained_like(Supernet(spec))
    rng = np.random.default_rng(seed)
    g = detnas.decode([int(c) for c in rng.integers(len(CHOICES), size=spec.blocks())], spec)
    standalone = supernet.extract(g).eval()
    assert isinstance(standalone, detnas.DetNASNet) and sum(p.numel() for p in standalone.parameters()) < \
        sum(p.numel() for p in supernet.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = supernet(x, g.choices), standalone(x)
    for level in a:
        torch.testing.assert_close(a[level], b[level], rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_path_wise_training_updates_only_the_sampled_path(optimizer):
    """Through the supernet trainer's own optimiser (momentum / moments and weight decay included): a
    step on path 2 leaves every choice that path 1 alone used exactly where path 1's step left it."""
    from nascli.trial import sgd_step
    from nascli.methods.detnas import SupernetOptions, supernet_optimizer

    options = SupernetOptions(width=0.25, depth=0.5, optimizer=optimizer, lr=0.01, weight_decay=0.1)
    supernet = Supernet(options.space_spec()).train()
    opt = supernet_optimizer(supernet, options)
    blocks = options.space_spec().blocks()
    for path in ([1] * blocks, [2] * blocks):
        before = {k: v.clone() for k, v in supernet.state_dict().items()}
        loss = sum(v.square().mean() for v in supernet(torch.randn(2, 3, 64, 64), path).values())
        sgd_step(opt, loss, options.lr, "test")
        changed = {k for k, v in supernet.state_dict().items() if not torch.equal(v, before[k])}
        assert changed and all(k.startswith("stem.") or k.split(".")[2] == str(path[0]) for k in changed)


def test_batchnorm_recalibration_changes_only_batchnorm_buffers():
    from nascli.trial import recompute_batchnorm

    net = detnas.DetNASNet(detnas.decode([3, 0, 1, 2] * 3 + [0] * (SpaceSpec(depth=0.5).blocks() - 12),
                                         SpaceSpec(width=0.25, depth=0.5)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = {k for k, _ in net.named_parameters()}
    recompute_batchnorm(net.eval(), [torch.randn(4, 3, 64, 64) for _ in range(3)])
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not changed & params
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert not net.training


def _toy(target):
    return lambda g: float(sum(c == t for c, t in zip(g.choices, target)))


def _search(strategy, reward):
    asked = []
    while True:
        out = strategy.ask(1)
        if not out:
            return asked
        asked.append(out[0])
        strategy.tell(out[0], reward(out[0]))


SMALL = dict(population=12, parents=4, mutations=4, crossovers=4, generations=8)


def test_evolution_beats_random_sampling_on_a_toy_with_a_known_optimum():
    spec = SpaceSpec(depth=0.5)  # 10 blocks, 4 choices
    evo, rnd = [], []
    for seed in range(5):
        target = np.random.default_rng(100 + seed).integers(4, size=spec.blocks())
        strategy = EvolutionStrategy(detnas.Space(spec), seed=seed, cost=sum, **SMALL)
        asked = _search(strategy, _toy(target))
        assert len(asked) == 12 * 8 and len({g.choices for g in asked}) == len(asked)  # never one twice
        evo.append(max(_toy(target)(g) for g in asked))
        rng = np.random.default_rng(seed)
        rnd.append(max(float(np.sum(rng.integers(4, size=spec.blocks()) == target)) for _ in asked))
    assert np.mean(evo) > np.mean(rnd) + 1


def test_evolution_children_are_valid_and_never_over_the_flops_limit():
    spec = SpaceSpec(width=0.25, depth=0.5)
    space = detnas.Space(spec)
    flops = {c: detnas.flops(detnas.decode(list(c), spec), 64) for c in
             {tuple(np.random.default_rng(k).integers(4, size=spec.blocks())) for k in range(20)}}
    limit = float(np.median(list(flops.values())))
    strategy = EvolutionStrategy(space, seed=1, flops_limit=limit, flops_size=64, population=8, parents=3,
                                 mutations=3, crossovers=3, generations=3)
    asked = _search(strategy, lambda g: float(g.choices.count(2)))  # 7x7 is rewarded and costs most
    assert asked and max(flops) and any(f > limit for f in flops.values())  # the limit binds
    for g in asked:
        assert detnas.is_valid(list(g.choices), spec)
        assert Genotype.from_json(g.to_json()) == g
        assert detnas.flops(g, 64) <= limit


def test_evolution_resumes_to_the_same_asks():
    spec = SpaceSpec(depth=0.5)
    reward = _toy(np.arange(spec.blocks()) % 4)
    whole = _search(EvolutionStrategy(detnas.Space(spec), seed=4, cost=sum, **SMALL), reward)
    first = EvolutionStrategy(detnas.Space(spec), seed=4, cost=sum, **SMALL)
    head = []
    for _ in range(30):  # two and a half generations
        g = first.ask(1)[0]
        first.tell(g, reward(g))
        head.append(g)
    second = EvolutionStrategy(detnas.Space(spec), seed=4, cost=sum, **SMALL)
    state = first.state_dict()
    second.load_state_dict({**state, "state": json.loads(json.dumps(state["state"]))})
    assert head + _search(second, reward) == whole
