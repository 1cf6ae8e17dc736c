"""Image classifiers: a small CNN for low resolutions and the CIFAR ResNet-32 (He et al. 2016, Sec. 4.2).

Both take float images in [-1, 1] (N x C x H x W) and expose ``features(x)`` (penultimate, after global average
pooling) and ``head`` (the linear classifier), so ``forward(x) == head(features(x))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CNN_FEATURES = 128
RESNET32_BLOCKS = 5  # 6n + 2 = 32 layers with n = 5 (He et al. Sec. 4.2)
RESNET32_WIDTHS = (16, 32, 64)


def resolve_arch(arch: str, resolution: int) -> str:
    """``auto`` picks the small CNN below 32 px and ResNet-32 from 32 px on (ClassifierConfig.arch)."""
    if arch == "auto":
        return "cnn" if resolution < 32 else "resnet32"
    if arch not in CLASSIFIER_ARCHS:
        raise ValueError(f"classifier.arch: unknown architecture {arch!r} (valid: auto, {', '.join(CLASSIFIER_ARCHS)})")
    return arch


def build_classifier_net(arch: str, num_classes: int, channels: int, resolution: int) -> "ClassifierNet":
    """A freshly initialised classifier network for images of ``channels`` x ``resolution`` x ``resolution``."""
    return CLASSIFIER_ARCHS[resolve_arch(arch, resolution)](num_classes, channels)


class ClassifierNet(nn.Module):
    """Shared interface: ``features`` (N x feature_dim) then a linear ``head``."""

    feature_dim: int
    num_classes: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(ClassifierNet):
    """Three conv-BN-ReLU stages (32, 64, 128 channels), 2x2 max-pool after the first two, global average pool.

    Enough for 8-16 px digits (our choice; the papers only use ResNet-32 / SpinalNet at 32 px and above).
    """

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, CNN_FEATURES
        self.body = nn.Sequential(
            _conv_bn_relu(channels, 32), nn.MaxPool2d(2),
            _conv_bn_relu(32, 64), nn.MaxPool2d(2),
            _conv_bn_relu(64, CNN_FEATURES),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(CNN_FEATURES, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut; option A (zero-padded, subsampled) when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class ResNet32(ClassifierNet):
    """CIFAR ResNet-32: 3x3 conv (16), three stages of 5 basic blocks (16 / 32 / 64 channels), 64-d features."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, RESNET32_WIDTHS[-1]
        layers: list[nn.Module] = [nn.Conv2d(channels, RESNET32_WIDTHS[0], 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(RESNET32_WIDTHS[0]), nn.ReLU()]
        c_in = RESNET32_WIDTHS[0]
        for stage, width in enumerate(RESNET32_WIDTHS):
            for block in range(RESNET32_BLOCKS):
                layers.append(BasicBlock(c_in, width, 2 if stage > 0 and block == 0 else 1))
                c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


CLASSIFIER_ARCHS = {"cnn": SmallCNN, "resnet32": ResNet32}  # classifier.arch (and "auto")
