"""Inference without what is overhead, not arithmetic: BatchNorm folded into the convolution it
follows. In eval mode a BatchNorm is an affine map per channel, so conv -> BN is one convolution
with a scaled weight and a bias (`torch.nn.utils.fusion.fuse_conv_bn_weights`): the same outputs
up to float order, one pass over the feature map fewer. GroupNorm depends on the input and cannot
be folded. ONNX Runtime folds the same pairs itself when it loads an exported detector.

Folded: consecutive (convolution, BatchNorm) children of an `nn.Sequential` (the searched ops,
the FPN's laterals, RetinaNet's towers) and torchvision ResNet's (conv_k, bn_k) pairs, whose
forward applies them back to back. Measured against the unfolded detector:
benchmarks/inference.json (`make bench-inference`).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _foldable(conv, bn) -> bool:
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, NORMS):
        return False
    if bn.running_mean is None:  # a BatchNorm without running statistics normalises by the batch's
        return False
    return conv.out_channels == bn.running_mean.numel()


def _fold_into(conv: nn.Conv2d, bn) -> None:
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                  bn.eps, bn.weight, bn.bias)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """(a copy of `model` in eval mode with every foldable BatchNorm folded, how many were)."""
    model = copy.deepcopy(model).eval()
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if _foldable(conv, bn):
                    _fold_into(conv, bn)
                    module._modules[b] = nn.Identity()
                    folded += 1
        if isinstance(module, (BasicBlock, Bottleneck, ResNet)):
            for k in (1, 2, 3):
                conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
                if conv is not None and _foldable(conv, bn):
                    _fold_into(conv, bn)
                    setattr(module, f"bn{k}", nn.Identity())
                    folded += 1
    return model, folded
