"""torchvision backbones that return C2..C5 (strides 4, 8, 16, 32); weights from a local file or,
by torchvision weights name, from torchvision's cache (downloaded there by torchvision when online)."""

from __future__ import annotations

import urllib.error
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


def _weights_enum(backbone: str, value: str):
    """The torchvision weights enum member `value` names for `backbone`, or None if it names none."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(backbone)
    if value == "default":
        return enum.DEFAULT
    prefix, _, member = value.rpartition(".")
    if prefix and prefix != enum.__name__:
        if prefix.endswith("_Weights"):
            raise CheckpointError(f"--weights {value}: {prefix} are not weights for backbone '{backbone}'; "
                                  f"use one of {', '.join(enum.__name__ + '.' + m.name for m in enum)}")
        return None
    return enum.__members__.get(member)


def resolve_weights(backbone: str, weights) -> Path | None:
    """The local state_dict file that `weights` stands for, or None for none: "none", "default" (the
    backbone's default torchvision weights), a weights name (IMAGENET1K_V1 or
    ResNet18_Weights.IMAGENET1K_V1) or the path of a state_dict file.

    A torchvision weights name resolves through torchvision's own cache ($TORCH_HOME/hub/checkpoints):
    if the file is not there, torchvision downloads it; offline that is one error saying where to
    put the file. A name that is neither a file nor a weights name is an error listing the choices.
    """
    if weights is None or str(weights) == "none":
        return None
    path = Path(weights)
    if path.is_file():
        return path
    if backbone not in BACKBONES:
        raise unknown_name("backbone", backbone, BACKBONES)
    member = _weights_enum(backbone, str(weights))
    if member is None:
        from torchvision.models import get_model_weights

        names = ", ".join(m.name for m in get_model_weights(backbone))
        raise CheckpointError(f"--weights {weights}: weights file not found, and not a weights name for '{backbone}' "
                              f"(none, default, {names})")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(member.url).name
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(member.url, str(cached), progress=False)  # temp file, then renamed
        except (urllib.error.URLError, OSError) as e:
            raise CheckpointError(f"--weights {type(member).__name__}.{member.name}: not in torchvision's cache "
                                  f"and could not be downloaded ({type(e).__name__}); put {member.url} at "
                                  f"{cached} (or set TORCH_HOME), or pass --weights FILE") from None
    return cached


def build_backbone(name: str = "resnet18", weights=None, frozen_bn: bool = False) -> nn.Module:
    """C2..C5 feature extractor; `weights` as `resolve_weights` takes it (None: random init).

    With `frozen_bn`, batch norm becomes FrozenBatchNorm2d (statistics and affine fixed), the usual
    choice when fine-tuning pretrained weights with small batches.
    """
    net = _torchvision_net(name, FrozenBatchNorm2d if frozen_bn else None)
    features = ResNetFeatures(net) if name.startswith("resnet") else MobileNetV2Features(net)
    path = resolve_weights(name, weights)
    if path is not None:
        load_weights(features.torchvision_module(), path)
    return features
