"""A run's architectures drawn as graphs: every space has a drawing, every block and op is in it."""

import pytest

from nascli.config import ProxySpec
from nascli.drawing import GRAPHS, draw_genotype, genotype_graph
from nascli.spaces import space_for
from nascli.spaces import SPACES, zoo
from nascli.strategies.random import RandomStrategy

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_space_has_a_drawing():
    assert set(GRAPHS) == set(SPACES)


def _sampled(space: str, k: int):
    return RandomStrategy(space_for(ProxySpec(space=space)), seed=k).ask(1)[0]


@pytest.mark.parametrize("k", range(3))
def test_nas_fcos_graph_has_every_block_with_its_two_ops(k):
    from nascli.spaces import nas_fcos

    g = _sampled("nas-fcos", k)
    graph = genotype_graph(g)
    for b, (_, _, o1, o2, agg) in enumerate(g.fpn):
        into = [label for _, target, label in graph.edges if target == f"b{b}"]
        assert sorted(into) == sorted([nas_fcos.FPN_OPS[o1], nas_fcos.FPN_OPS[o2]])
        assert nas_fcos.AGGREGATIONS[agg] in graph.nodes[f"b{b}"]
    assert {"P3", "P4", "P5", "P6", "P7"} <= set(graph.nodes)
    head = [n for n in graph.nodes if n.startswith("h") and n != "h_in"]
    assert len(head) == g.head_layers
    columns = graph.columns()
    assert all(columns[s] < columns[t] for s, t, _ in graph.edges)  # drawn left to right


@pytest.mark.parametrize("k", range(3))
def test_nas_fpn_graph_has_every_cell_at_its_level(k):
    g = _sampled("nas-fpn", k)
    graph = genotype_graph(g)
    for c, (_, _, level, _) in enumerate(g.cells):
        assert f"P{level}" in graph.nodes[f"c{c}"]
        assert sum(target == f"c{c}" for _, target, _ in graph.edges) == 2
    outputs = [graph.nodes[n] for n in graph.nodes if graph.kinds[n] == "output"]
    assert sorted(label.split("P")[1][0] for label in outputs) == ["3", "4", "5", "6", "7"]


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_architectures_draw_to_png(name, tmp_path):
    path = draw_genotype(zoo.get(f"zoo:{name}"), tmp_path / f"{name}.png")
    assert path.read_bytes()[:8] == PNG


def test_runs_show_arch_draws_a_trial_and_names_a_missing_one(tmp_path, run_cli):
    from nascli.store import RunStore

    store = RunStore(tmp_path / "run")
    store.add_control(zoo.get("zoo:fpn-fcos").to_json())
    [trial] = store.add_pending([_sampled("nas-fcos", 0).to_json()], [0], b"")
    store.finish(trial, "done", -2.0, {})
    store.close()
    code, out, _ = run_cli("runs", "show", tmp_path / "run", "--arch", trial)
    assert code == 0 and "trial 1 (nas-fcos)" in out
    assert (tmp_path / "run" / "arch-1.png").read_bytes()[:8] == PNG
    code, _, err = run_cli("runs", "show", tmp_path / "run", "--arch", 7)
    assert code == 2 and "has no trial 7" in err


def test_auto_fpn_graph_has_every_link_and_head_edge_that_is_not_none():
    g = _sampled("auto-fpn", 0)
    graph = genotype_graph(g)
    links = sum(op != 0 for layer in g.neck for row in layer for op in row)
    head_edges = sum(op != 0 for cell in g.head for op in cell)
    assert sum(label not in ("", "concat", "conv s2", "relu, conv s2", "each level") for *_, label in graph.edges) \
        == links + head_edges
    assert {"P3", "P4", "P5", "P6", "P7"} <= set(graph.nodes)
