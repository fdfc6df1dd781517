"""NAS-FCOS (papers/nas-fcos.md): the FPN and head of an FCOS detector searched by an LSTM
controller trained with PPO, each candidate decoder trained briefly on cached features and
rewarded by its negated meta-val loss. Space: spaces/nas_fcos.py; strategy:
strategies/controller.py; trial: methods/decoder.py; control: the FPN + FCOS head."""

from ..spaces import nas_fcos
from ..strategies.controller import ControllerOptions, ControllerStrategy
from . import decoder
from .base import FEATURES, Method


def controller_options(spec, cache, trials: int, lam=None) -> dict:
    """The controller's settings from the spec's `controller` section."""
    return dict(spec.controller)


METHOD = Method(name="nas-fcos", space=nas_fcos, strategy=ControllerStrategy, proxy="nas-fcos", reward="loss",
                cache=FEATURES, control=decoder.fcos_control, trial=decoder.trial, options=controller_options,
                sections={"controller": ControllerOptions})
