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


# a supernet's schedule (cosine, α frozen for the first third) is fixed by its epochs at start
METHOD = Method(name="auto-fpn", space=auto_fpn, strategy=DartsStrategy, proxy="auto-fpn", reward="loss",
                cache=FEATURES, control=decoder.fcos_control, trial=decoder.trial, options=darts_options,
                resource_weight=True, budget_fixed=True)
