"""A genotype drawn as a graph (nodes, ops, levels) to a PNG, for every space: what a run found,
something a user can look at (`nascli runs show RUN --arch N`).

Each space turns its genotype into a `Graph` (nodes in columns by depth, edges labelled with the op
they apply); one drawer lays every graph out the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .errors import SpecError


@dataclass
class Graph:
    """Nodes {id: label} in the order added, edges (source, target, op label), notes under it."""

    title: str
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    kinds: dict = field(default_factory=dict)  # id -> "input" | "output" | "cell"

    def node(self, key: str, label: str, kind: str = "cell") -> str:
        self.nodes[key] = label
        self.kinds[key] = kind
        return key

    def edge(self, source: str, target: str, label: str = "") -> None:
        self.edges.append((source, target, label))

    def columns(self) -> dict:
        """Column of each node: 0 for nodes nothing feeds, else one past its deepest source."""
        col = {}
        sources = {}
        for s, t, _ in self.edges:
            sources.setdefault(t, []).append(s)
        for key in self.nodes:  # nodes are added after their sources
            col[key] = 1 + max((col[s] for s in sources.get(key, []) if s in col), default=-1)
        return col


def _p6_p7_head_input(graph: Graph) -> str:
    """P6 and P7 from P5 (stride-2 convs, as FCOS) and the head's input node, shared by the FCOS decoders."""
    graph.node("P6", "P6", "output")
    graph.edge("P5", "P6", "conv s2")
    graph.node("P7", "P7", "output")
    graph.edge("P6", "P7", "relu, conv s2")
    head_in = graph.node("h_in", "head input\n(each of P3..P7)", "input")
    graph.edge("P7", head_in, "each level")
    return head_in


def _nas_fcos(g) -> Graph:
    from .spaces import nas_fcos as s

    graph = Graph(f"NAS-FCOS decoder: {len(g.fpn)} FPN blocks, head of {g.head_layers} layers")
    pool = [graph.node(lv, lv.upper(), "input") for lv in g.inputs]
    for k, (i1, i2, o1, o2, agg) in enumerate(g.fpn):
        node = graph.node(f"b{k}", f"block {k}\n{s.AGGREGATIONS[agg]}")
        graph.edge(pool[i1], node, s.FPN_OPS[o1])
        graph.edge(pool[i2], node, s.FPN_OPS[o2])
        pool.append(node)
    free = s.dangling(g)
    extra = [pool[i] for i in free[:-3]]
    for level, index in zip(("P5", "P4", "P3"), free[-3:]):
        graph.node(level, level, "output")
        graph.edge(pool[index], level)
        for e in extra:
            graph.edge(e, level, "+")
    head_in = _p6_p7_head_input(graph)
    if g.head_sequence:
        prev = head_in
        for k, op in enumerate(g.head_sequence):
            node = graph.node(f"h{k}", f"head layer {k}")
            graph.edge(prev, node, s.HEAD_SEQUENCE_OPS[op])
            prev = node
    else:
        first = graph.node("h0", "head layer 0")
        graph.edge(head_in, first, s.FPN_OPS[g.head_first])
        names = [(head_in, ""), (first, "")]  # the head's pool: (node, which output of it)
        for k, (i1, i2, o1, o2, agg) in enumerate(g.head_blocks, start=1):
            node = graph.node(f"h{k}", f"head block {k}\n{s.AGGREGATIONS[agg]}")
            for index, op in ((i1, o1), (i2, o2)):
                source, output = names[index]
                graph.edge(source, node, s.FPN_OPS[op] + (f" of {output}" if output else ""))
            names += [(node, "op1"), (node, "op2"), (node, "")]
    graph.notes.append("head weights shared across levels from layer: " +
                       ", ".join(f"P{3 + lv} {share}" for lv, share in enumerate(g.head_share)))
    graph.notes.append("dangling block outputs other than P3..P5's are added to each of them")
    return graph


def _nas_fpn(g) -> Graph:
    from .spaces import nas_fpn as s

    graph = Graph(f"NAS-FPN pyramid: {len(g.cells)} merging cells, stacked x{g.repeats}")
    pool = [graph.node(f"in{lv}", f"P{lv} in", "input") for lv in s.LEVELS]
    outputs = len(g.cells) - len(s.LEVELS)
    for k, (a, b, level, op) in enumerate(g.cells):
        out = k >= outputs
        node = graph.node(f"c{k}", f"cell {k}: P{level}" + (" out" if out else ""), "output" if out else "cell")
        graph.edge(pool[a], node, "")
        graph.edge(pool[b], node, s.BINARY_OPS[op])
        pool.append(node)
    graph.notes.append("each cell: resize inputs to its level, binary op, ReLU, 3x3 conv, BN; an output cell "
                       "also sums the unused candidates of its level")
    return graph


def _auto_fpn(g) -> Graph:
    from .spaces import auto_fpn as s

    graph = Graph(f"Auto-FPN decoder: {len(g.neck)} fusion layers, {len(g.head)} head cells")
    levels = [graph.node(lv, lv.upper(), "input") for lv in s.LEVELS]
    for l, layer in enumerate(g.neck):
        last = l == len(g.neck) - 1
        nodes = [graph.node(f"P{3 + i}" if last else f"l{l}p{3 + i}", f"P{3 + i}" if last else f"layer {l} P{3 + i}",
                            "output" if last else "cell") for i in range(len(s.LEVELS))]
        for i, row in enumerate(layer):
            for j, op in enumerate(row):
                if op:
                    graph.edge(levels[j], nodes[i], s.NECK_OPS[op])
        levels = nodes
    outputs = [_p6_p7_head_input(graph)] * 2  # the inputs of cell 0: cells m-2 and m-1
    for m, cell in enumerate(g.head):
        states = outputs[-2:]
        for node in range(s.HEAD_NODES):
            states.append(graph.node(f"c{m}n{node}", f"cell {m} node {node}"))
            for e, (n_, k) in enumerate(s.head_edges()):
                if n_ == node and cell[e]:
                    graph.edge(states[k], states[-1], s.HEAD_OPS[cell[e]])
        out = graph.node(f"c{m}", f"cell {m} out")
        for node in states[-s.HEAD_NODES:]:
            graph.edge(node, out, "concat")
        outputs.append(out)
    graph.notes.append("each fusion link: 1x1 conv, the op, then max-pooled / upsampled to its level; "
                       "a level sums its links")
    return graph


def _hand_fpn(g, head: str) -> Graph:
    graph = Graph(f"hand-designed FPN + {head} head ({g.num_convs} tower convs)")
    for lv in ("c3", "c4", "c5"):
        graph.node(lv, lv.upper(), "input")
    graph.node("P5", "P5", "output")
    graph.edge("c5", "P5", "1x1")
    graph.node("P4", "P4", "output")
    graph.edge("c4", "P4", "1x1")
    graph.edge("P5", "P4", "up +")
    graph.node("P3", "P3", "output")
    graph.edge("c3", "P3", "1x1")
    graph.edge("P4", "P3", "up +")
    prev = _p6_p7_head_input(graph)
    for k in range(g.num_convs):
        node = graph.node(f"h{k}", f"tower conv {k}")
        graph.edge(prev, node, "conv3x3")
        prev = node
    return graph


def _spnas(g) -> Graph:
    """Stem, then each stage's blocks in a chain (`1` regular, `d` doubling, `s2` the stride-2
    opener), C2.. outputs, and a stage's parallel subnets as nodes fed by the stage before."""
    from .spaces.spnas import Serial

    serial = Serial.parse(g.serial)
    graph = Graph(f"SP-NAS backbone {g.describe()} ({g.stem} stem, {g.base_channels} base channels)")
    prev = graph.node("stem", f"{g.stem} stem\n(stride 4)", "input")
    block = 0
    for s, stage in enumerate(serial.stages):
        stage_in = prev
        for k, code in enumerate(stage):
            label = ("d" if code == "d" else "1") + (" s2" if s > 0 and k == 0 else "")
            node = graph.node(f"b{block}", f"{serial.block} {label}")
            graph.edge(prev, node)
            prev, block = node, block + 1
        for sub in range(g.parallel[s] if g.parallel else 0):
            node = graph.node(f"p{s}_{sub}", f"subnet {sub + 1} of\nstage {s + 1}")
            graph.edge(stage_in, node, "copy of stage")
            graph.edge(prev, node, "1x1, up")
            prev = node
        out = graph.node(f"c{s + 2}", f"C{s + 2}", "output")
        graph.edge(prev, out)
    graph.notes.append("each stage after the first opens with a stride-2 block; d doubles the channels")
    return graph


def _detnas(g) -> Graph:
    """Stem, each stage's searchable blocks with their choice, C2..C5 at the stage ends."""
    from .spaces import detnas

    graph = Graph(f"DetNAS backbone ({g.layout} layout, width {g.width}, depth {g.depth})")
    prev, i = graph.node("stem", "3x3 conv s2", "input"), 0
    for stage, repeats in enumerate(g.spec.repeats()):
        for r in range(repeats):
            node = graph.node(f"b{i}", f"{detnas.CHOICES[g.choices[i]]}" + (" s2" if r == 0 else ""))
            graph.edge(prev, node)
            prev, i = node, i + 1
        out = graph.node(f"c{stage + 2}", f"C{stage + 2}", "output")
        graph.edge(prev, out)
    return graph


GRAPHS = {"nas-fcos": _nas_fcos, "nas-fpn": _nas_fpn, "auto-fpn": _auto_fpn, "fpn-fcos": partial(_hand_fpn, head="FCOS"),
          "fpn-retinanet": partial(_hand_fpn, head="RetinaNet"), "sp-nas": _spnas,
          "detnas": _detnas}


def genotype_graph(genotype) -> Graph:
    """The genotype's graph: the built-in spaces' drawings above, else its space module's own
    `graph(genotype)` (a method added from outside keeps its drawing beside its space), else one box
    with its description, so a new space always has a picture."""
    from .spaces import SPACES

    own = GRAPHS.get(genotype.space) or getattr(SPACES.get(genotype.space), "graph", None)
    if own is not None:
        return own(genotype)
    if not hasattr(genotype, "describe"):
        raise SpecError(f"genotype: no drawing for space {genotype.space!r}")
    graph = Graph(f"{genotype.space}: {genotype.describe()}")
    searched = graph.node("searched", genotype.describe())
    graph.edge(graph.node("in", "input", "input"), searched)
    graph.edge(searched, graph.node("out", "output", "output"))
    return graph


def draw_genotype(genotype, path, title: str | None = None) -> Path:
    """Draws the genotype's graph to a PNG at `path`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = genotype_graph(genotype)
    col = graph.columns()
    rows: dict = {}
    pos = {}
    for key in graph.nodes:
        pos[key] = (col[key], rows.setdefault(col[key], 0))
        rows[col[key]] += 1
    height = max(rows.values())
    pos = {k: (x * 2.2, -(y - (rows[x] - 1) / 2) * 1.3) for k, (x, y) in pos.items()}
    fig, ax = plt.subplots(figsize=(2.0 + 1.9 * (max(col.values()) + 1), 1.6 + 1.1 * height))
    colors = {"input": "#cfe2f3", "output": "#d9ead3", "cell": "#fff2cc"}
    for s, t, label in graph.edges:
        (x0, y0), (x1, y1) = pos[s], pos[t]
        ax.annotate("", (x1 - 0.55, y1), (x0 + 0.55, y0),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.8, "shrinkA": 0, "shrinkB": 0})
        if label:
            ax.text(x0 + 0.55 + 0.6 * (x1 - x0 - 1.1), y0 + 0.6 * (y1 - y0), label, fontsize=6, ha="center",
                    va="center", color="0.15", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"})
    for key, label in graph.nodes.items():
        x, y = pos[key]
        ax.text(x, y, label, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round,pad=0.3", "fc": colors[graph.kinds[key]], "ec": "0.3"})
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 1, max(ys) + 0.8)
    ax.axis("off")
    ax.set_title(title or graph.title, fontsize=9)
    if graph.notes:
        fig.text(0.01, 0.01, "\n".join(graph.notes), fontsize=6.5, color="0.25", va="bottom")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
