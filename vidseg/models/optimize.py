"""Inference-time engineering that keeps the network's function: folded BatchNorm, channels-last, dtype."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from vidseg.models.backbones import EfficientNetBackbone, ResNetBackbone


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def _what_stays(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BatchNorm folded into its conv: nothing, or for timm's BatchNormAct2d its activation."""
    if hasattr(bn, "act"):
        return nn.Sequential(getattr(bn, "drop", nn.Identity()), bn.act)
    return nn.Identity()


# (conv, BatchNorm) attribute pairs of the blocks fold_batchnorm knows, by a child that tells the block apart.
_BLOCK_PAIRS = (
    ("conv_pwl", (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))),  # timm InvertedResidual
    ("conv_dw", (("conv_dw", "bn1"), ("conv_pw", "bn2"))),  # timm DepthwiseSeparableConv
    ("conv1", (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))),  # torchvision ResNet blocks
)


def _fold_stem(backbone: nn.Module, stem: str) -> None:
    """A stem whose extra-channel conv is added before ``bn1``: BN(a + b) = BN(a) + scale * b, so the extra conv
    is scaled, not biased."""
    bn = backbone.bn1
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    if backbone.extra_conv is not None:
        backbone.extra_conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
    setattr(backbone, stem, _fold_into(getattr(backbone, stem), bn))
    backbone.bn1 = _what_stays(bn)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv (in place).

    Handles torchvision ResNet blocks (``convN``/``bnN``, ``downsample``), timm's EfficientNet blocks (their
    BatchNormAct2d keeps its activation), conv/BN pairs inside ``nn.Sequential`` (VGG, the convnet backbones) and
    the ResNet and EfficientNet stems with their extra-channel conv.
    """
    for child in list(module.modules()):
        if isinstance(child, (ResNetBackbone, EfficientNetBackbone)) and isinstance(child.bn1, nn.BatchNorm2d):
            _fold_stem(child, "conv1" if isinstance(child, ResNetBackbone) else "conv_stem")
            continue
        for marker, pairs in _BLOCK_PAIRS:
            if isinstance(getattr(child, marker, None), nn.Conv2d):
                for conv_name, bn_name in pairs:
                    conv, bn = getattr(child, conv_name, None), getattr(child, bn_name, None)
                    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                        setattr(child, conv_name, _fold_into(conv, bn))
                        setattr(child, bn_name, _what_stays(bn))
                break
        if isinstance(child, nn.Sequential):
            layers = list(child)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    child[i] = _fold_into(layers[i], layers[i + 1])
                    child[i + 1] = _what_stays(layers[i + 1])
    return module


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    dtype: torch.dtype = torch.float32,
    inplace: bool = False,
) -> nn.Module:
    """An eval-mode, gradient-free copy of ``model`` (the original when ``inplace``) with BatchNorm folded,
    channels-last weights and parameters in ``dtype`` (bfloat16 halves the memory; frames and masks are cast
    by the network). Use it under ``torch.inference_mode()``."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if fold_bn:
        fold_batchnorm(model)
    if dtype != torch.float32:
        model.to(dtype)
    if channels_last:
        to_channels_last(model)
    return model


class FrozenForward:
    """Runs a frozen module (a ``freeze_encoder`` backbone) through an inference copy of it: BatchNorm folded,
    channels-last, in the autocast precision when autocast is on, without autograd. In training this saves each
    forward its BatchNorms and, under bfloat16 autocast, the cast of every weight (4-12 % of a fast training step
    on the CPU, docs/training.md). The copy is rebuilt when the module's tensors change (loading a state dict, an
    optimizer step on a module that should be frozen), its device or the precision does; the module itself stays as
    it is, so its state dict and checkpoints are unchanged. Hold one per module, outside it (a plain attribute of its
    owner)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._copy: nn.Module | None = None

    def __call__(self, module: nn.Module, x: torch.Tensor):
        tensors = list(module.state_dict(keep_vars=True).values())
        device = tensors[0].device
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else tensors[0].dtype
        key = (device, dtype, tuple((t.data_ptr(), t._version) for t in tensors))
        if key != self._key:
            self._copy, self._key = optimize_for_inference(module, dtype=dtype), key
        with torch.no_grad():
            return self._copy(x.to(dtype).contiguous(memory_format=torch.channels_last))


def _is_wide_dense(conv: nn.Conv2d) -> bool:
    return conv.groups == 1 and min(conv.kernel_size) >= 5 and conv.in_channels >= 1024


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def _channels_last_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last weights (in place), except for wide dense convolutions (5x5 and larger, 1024+ input channels:
    HS2S's ConvLSTMs), which run in the contiguous layout, their input and output converted. oneDNN measured on a
    2-core AVX-512 EPYC: 4096->4096 5x5 at 16x28 1.36x slower channels-last in float32 (1.21x in bfloat16), while
    depthwise and 1x1 convolutions run 1.4-2.6x faster channels-last."""
    for module in model.modules():
        if type(module) is nn.Conv2d and _is_wide_dense(module):
            if not getattr(module, "_runs_contiguous", False):
                module.weight.data = module.weight.data.contiguous()
                module.register_forward_pre_hook(_contiguous_input)
                module.register_forward_hook(_channels_last_output)
                module._runs_contiguous = True
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.dim() == 4:  # one copy per weight, as Module.to(memory_format=...) makes
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def _holds_loose_meta_tensors(model: nn.Module) -> bool:
    """Whether a module of ``model`` keeps meta tensors outside its parameters and buffers (torchvision's anchor
    generator keeps its cell anchors in a list)."""
    for module in model.modules():
        for value in vars(module).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(item, torch.Tensor) and item.is_meta for item in items):
                return True
    return False


def load_for_inference(
    config,
    state_dict: dict[str, torch.Tensor],
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    dtype: torch.dtype = torch.float32,
    dropped: tuple[str, ...] = (),
) -> nn.Module:
    """Build a network straight from the state dict of an already optimized copy, without a float32 model.

    ``state_dict`` must come from ``optimize_for_inference(model, fold_bn=..., dtype=...).state_dict()`` with
    the same ``fold_bn``, possibly with int8 convolutions (:func:`vidseg.models.quantize.quantize_convs`). The
    network (the registry's model of ``config.method``) is built on the ``meta`` device (no memory; on the CPU when
    a module keeps tensors outside its parameters and buffers, as torchvision's detectors do), given the
    folded structure and the int8 convolutions there, and the tensors of ``state_dict`` are taken over as they
    are (``assign``, no copy). So a bfloat16 or int8 HS2S never holds its 1.5 GB of float32 weights: peak
    memory is the state dict plus activations. The int8 convolutions' entries are removed from ``state_dict``
    as they are packed, so that their weights are held once. ``dropped``: submodules the optimized copy had set to None (e.g. a
    head that only feeds the training loss).
    """
    from vidseg.models.quantize import int8_names, int8_shells
    from vidseg.registry import get_method

    build = get_method(config.method).load("model")
    with torch.device("meta"):
        model = build(config)
    if _holds_loose_meta_tensors(model):  # they are not in a state dict: build it on the CPU instead
        model = build(config)
    with torch.device("meta"):
        optimize_for_inference(model, fold_bn=fold_bn, channels_last=False, dtype=dtype, inplace=True)
    for name in dropped:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, None)
    names = int8_names(state_dict)
    if names:
        int8_shells(model, names)
        for name in names:  # one convolution at a time, freeing each int8 weight once packed
            model.get_submodule(name).take_state(state_dict, name + ".")
    model.load_state_dict(state_dict, strict=True, assign=True)
    # Non-persistent buffers are not in a state dict: recreate them (the input statistics of every backbone user).
    for module in model.modules():
        if "mean" in module._buffers:
            backbone = next(m for m in module.modules() if hasattr(m, "input_mean"))
            module.mean = torch.tensor(backbone.input_mean).view(1, 3, 1, 1).to(dtype)
            module.std = torch.tensor(backbone.input_std).view(1, 3, 1, 1).to(dtype)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"state dict does not fill {left[:5]}{'...' if len(left) > 5 else ''}")
    if channels_last:
        to_channels_last(model)
    return model.eval()


__all__ = ["fold_batchnorm", "load_for_inference", "optimize_for_inference", "to_channels_last"]
