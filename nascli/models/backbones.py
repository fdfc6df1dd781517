"""torchvision backbones that return C2..C5 (strides 4, 8, 16, 32), from local weights only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

from ..errors import CheckpointError, unknown_name

LEVELS = ("c2", "c3", "c4", "c5")


class ResNetFeatures(nn.Module):
    """A torchvision ResNet cut after layer4; forward returns {"c2": ..., "c5": ...}."""

    def __init__(self, net: models.ResNet):
        super().__init__()
        self.body = net
        del self.body.fc, self.body.avgpool
        widths = [blk[-1].conv3.out_channels if hasattr(blk[-1], "conv3") else blk[-1].conv2.out_channels
                  for blk in (net.layer1, net.layer2, net.layer3, net.layer4)]
        self.out_channels = dict(zip(LEVELS, widths))

    def torchvision_module(self) -> nn.Module:
        """The part whose state_dict keys are torchvision's (for loading weights files)."""
        return self.body

    def forward(self, x):
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c2 = b.layer1(x)
        c3 = b.layer2(c2)
        c4 = b.layer3(c3)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": b.layer4(c4)}


class MobileNetV2Features(nn.Module):
    """torchvision MobileNetV2 `features`, tapped where the stride reaches 4, 8, 16 and 32."""

    TAPS = (3, 6, 13, 18)  # index of the last block at each stride

    def __init__(self, net: models.MobileNetV2):
        super().__init__()
        self.features = net.features
        widths = [24, 32, 96, net.last_channel]
        self.out_channels = dict(zip(LEVELS, widths))

    def torchvision_module(self) -> nn.Module:
        return self  # keys are already torchvision's "features.*"

    def forward(self, x):
        out, taps = {}, dict(zip(self.TAPS, LEVELS))
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out[taps[i]] = x
        return out


def _torchvision_net(name: str, norm_layer):
    factories = {"resnet18": models.resnet18, "resnet34": models.resnet34,
                 "resnet50": models.resnet50, "mobilenet_v2": models.mobilenet_v2}
    if name not in factories:
        raise unknown_name("backbone", name, factories)
    return factories[name](weights=None, norm_layer=norm_layer)


BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")


def load_weights(net: nn.Module, path) -> None:
    """Loads a torchvision-format state_dict from a local file into `net` (a torchvision model
    without its classifier); keys the model lacks, like the classifier's, are ignored."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a foreign file
        raise CheckpointError(f"{path}: not a torch state_dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict mapping names to tensors")
    own = net.state_dict()
    wanted = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in wanted and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} backbone tensors missing, e.g. '{missing[0]}'")
    for k, v in wanted.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: tensor '{k}' has shape {tuple(v.shape)}, "
                                  f"expected {tuple(own[k].shape)}")
    net.load_state_dict(wanted, strict=False)


def build_backbone(name: str = "resnet18", weights=None, frozen_bn: bool = False) -> nn.Module:
    """C2..C5 feature extractor; `weights` is a local torchvision state_dict file (never downloaded).

    With `frozen_bn`, batch norm becomes FrozenBatchNorm2d (statistics and affine fixed), the usual
    choice when fine-tuning pretrained weights with small batches.
    """
    net = _torchvision_net(name, FrozenBatchNorm2d if frozen_bn else None)
    features = ResNetFeatures(net) if name.startswith("resnet") else MobileNetV2Features(net)
    if weights is not None:
        load_weights(features.torchvision_module(), weights)
    return features
