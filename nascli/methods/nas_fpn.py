"""NAS-FPN (papers/nas-fpn.md): a pyramid of merging cells under a RetinaNet head, searched by
the same controller as NAS-FCOS (the paper's RNN + PPO) and rewarded by meta-val AP. Space:
spaces/nas_fpn.py; strategy: strategies/controller.py; trial: methods/decoder.py; control: FPN +
RetinaNet head (spaces/fpn_retinanet.py)."""

from ..spaces import fpn_retinanet, nas_fpn
from ..strategies.controller import ControllerOptions, ControllerStrategy
from . import decoder
from .base import FEATURES, Method
from .nas_fcos import controller_options


def retinanet_control(spec, cache):
    """The hand design NAS-FPN is measured against: FPN + the same RetinaNet head and anchors."""
    return fpn_retinanet.Genotype()


METHOD = Method(name="nas-fpn", space=nas_fpn, strategy=ControllerStrategy, proxy="nas-fpn", reward="ap",
                cache=FEATURES, control=retinanet_control, trial=decoder.trial, options=controller_options,
                sections={"controller": ControllerOptions})
