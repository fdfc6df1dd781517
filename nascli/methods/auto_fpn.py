"""Auto-FPN (papers/auto-fpn.md): a differentiable (DARTS) search of the neck and head cells,
one supernet epoch per trial with a resource term weighted by λ; each decoded network is then
scored by the decoder trial. Space and supernet: spaces/auto_fpn.py; strategy:
strategies/darts.py; trial: methods/decoder.py; control: the FPN + FCOS head."""

from ..config import validate
from ..spaces import auto_fpn
from ..strategies.darts import DartsOptions, DartsStrategy, resolve_lambda
from . import decoder
from .base import FEATURES, Method


def darts_options(spec, cache, trials: int, lam=None) -> dict:
    """The supernet's options (`darts:`), λ resolved to a number (--lambda over the spec's), the
    cache it trains on and its epochs (one per trial)."""
    darts = dict(spec.darts)
    default = validate(DartsOptions, darts, "proxy spec field 'darts'").lambda_
    darts["lambda"] = resolve_lambda(lam if lam is not None else default)
    return {**darts, "cache": str(cache), "epochs": trials}


def latency_term(gate, space, seed: int = 0) -> dict:
    """Under --latency-target, the supernet's resource term is the promoted network's expected
    latency (strategies/darts.LatencyTerm): every op on every edge costed on the machine's table at
    the promoted shape, the fixed part read off one random decoded network (its prediction less
    its edges). Returned as the strategy's `latency` option."""
    import torch

    from ..latency_table import random_genotypes
    from ..strategies.darts import LatencyTerm

    cand = gate.candidates
    [reference] = random_genotypes(space, 1, seed)
    detector = cand.detector(reference)
    with torch.inference_mode():
        feats = detector.backbone(cand.example)
        pyramid = [tuple(p.shape[-2:]) for p in detector.decoder.fpn(feats)]
    edge_ms = auto_fpn.edge_latency(cand.cost, feats, pyramid, cand.model_args["width"], space.spec)
    fixed = cand.predict(reference) - auto_fpn.edges_ms(reference, edge_ms)
    return {"latency": LatencyTerm(edge_ms, fixed, gate.limit_ms)}


def decoded_ops_panel(run_dir, out_dir=None) -> dict:
    """The decoded network after each supernet epoch (one trial each): the share of none, skip and
    parametric ops, so that a collapse of α onto parameter-free ops is seen as it happens."""
    from pathlib import Path

    from ..report import op_share_figure
    from ..store import RunStore, unpack_state

    store = RunStore(run_dir, create=False, readonly=True)
    try:
        rows = [(t.id, auto_fpn.op_shares(auto_fpn.Genotype.from_json(t.genotype, f"trial {t.id}")))
                for t in store.trials(control=False)]
        blob = store.load_state()
    finally:
        store.close()
    stopped = unpack_state(blob).get("stopped", "") if blob else ""
    table = [(trial, *(f"{shares[k]:.2f}" for k in ("none", "skip", "parametric"))) for trial, shares in rows]
    figure = op_share_figure(rows, Path(out_dir or run_dir) / "decoded-ops.png")
    return {"notes": [f"the search stopped early: {stopped}"] if stopped else [],
            "tables": {"decoded network per supernet epoch": (["epoch (trial)", "none", "skip", "parametric"], table)},
            "figures": {"decoded ops: the share of none / skip / parametric ops after each supernet epoch": str(figure)}}


# a supernet's schedule (cosine, α frozen for the first third) is fixed by its epochs at start
METHOD = Method(name="auto-fpn", space=auto_fpn, strategy=DartsStrategy, proxy="auto-fpn", reward="loss",
                cache=FEATURES, control=decoder.fcos_control, trial=decoder.trial, options=darts_options,
                resource_weight=resolve_lambda, budget_fixed=True, panels=decoded_ops_panel,
                latency_term=latency_term, sections={"darts": DartsOptions})
