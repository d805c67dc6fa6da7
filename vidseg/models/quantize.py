"""int8 inference for the large convolutions of a network, through PyTorch's own quantisation tooling.

Static quantisation with calibration: :func:`calibrate_convs` runs the float network once with
``torch.ao.quantization`` observers on the input and output of every large ``nn.Conv2d`` and returns their
scales and zero points; :func:`quantize_convs` returns a copy in which those convolutions are
:class:`Int8Conv2d` (a ``torch.ao.nn.quantized.Conv2d``: weights int8 per output channel, activations uint8
per tensor, the x86/FBGEMM kernels). Everything else (element-wise gates, small and depthwise convolutions,
the heads) stays float32, since quantising and de-quantising around a small convolution costs more than it
saves (measured on a 2-core AVX2 EPYC: a 256-channel 3x3 conv 2.2x faster in int8, a 64-channel one slower).
Activations are observed by min and max (a histogram observer gave the same held-out J&F).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

# PyTorch marks its quantised tensors deprecated (moving to torchao) but still ships and runs them; say it once, in
# the docs, not on every run.
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated", category=DeprecationWarning)

# A conv is quantised when its weight holds at least this many values (in x out x k x k / groups).
MIN_WEIGHTS = 128 * 128 * 9

QParams = dict[str, tuple[float, int, float, int]]  # conv name -> (input scale, zero point, output scale, zp)


def eligible_convs(model: nn.Module, min_weights: int | None = None) -> dict[str, nn.Conv2d]:
    """The plain 2-D convolutions of ``model`` worth computing in int8 (default: :data:`MIN_WEIGHTS`), by name."""
    min_weights = MIN_WEIGHTS if min_weights is None else min_weights
    return {name: m for name, m in model.named_modules()
            if type(m) is nn.Conv2d and m.weight.numel() >= min_weights and m.padding_mode == "zeros"}


def calibrate_convs(model: nn.Module, run: Callable[[], object], min_weights: int | None = None) -> QParams:
    """Quantisation parameters of the eligible convolutions' inputs and outputs, observed while ``run()`` calls
    the float ``model`` (e.g. on a video's first frame). Convolutions that ``run`` never reached are left out."""
    from torch.ao.quantization.observer import MinMaxObserver

    observers: dict[str, tuple[MinMaxObserver, MinMaxObserver]] = {}
    handles = []

    def hook(name: str):
        def observe(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            # 7-bit inputs: FBGEMM sums pairs of uint8 x int8 products in int16, which full 8-bit inputs can overflow
            pair = observers.setdefault(name, (MinMaxObserver(quant_min=0, quant_max=127), MinMaxObserver()))
            pair[0](args[0].detach().float())
            pair[1](output.detach().float())
        return observe

    for name, conv in eligible_convs(model, min_weights).items():
        handles.append(conv.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            run()
    finally:
        for handle in handles:
            handle.remove()
    params: QParams = {}
    for name, (seen_in, seen_out) in observers.items():
        in_scale, in_zero = seen_in.calculate_qparams()
        out_scale, out_zero = seen_out.calculate_qparams()
        params[name] = (float(in_scale), int(in_zero), float(out_scale), int(out_zero))
    return params


class Int8Conv2d(nn.Module):
    """A convolution computed in int8 that takes and returns float tensors (any float dtype in, float32 out)."""

    def __init__(self, conv: nn.Conv2d, params: tuple[float, int, float, int]):
        super().__init__()
        import torch.ao.nn.quantized as nnq

        in_scale, in_zero, out_scale, out_zero = params
        weight = conv.weight.detach().float()
        # symmetric per output channel, as FBGEMM expects
        scales = (weight.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8).double()
        qweight = torch.quantize_per_channel(weight.contiguous(), scales, torch.zeros_like(scales, dtype=torch.long),
                                             0, torch.qint8)
        self.conv = nnq.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                               bias=conv.bias is not None)
        bias = None if conv.bias is None else conv.bias.detach().float()
        self.conv.set_weight_bias(qweight, bias)
        self.conv.scale, self.conv.zero_point = out_scale, out_zero
        self.in_scale, self.in_zero = in_scale, in_zero

    def forward(self, x: Tensor) -> Tensor:
        q = torch.quantize_per_tensor(x.float(), self.in_scale, self.in_zero, torch.quint8)
        return self.conv(q).dequantize()


def quantize_convs(model: nn.Module, params: QParams) -> nn.Module:
    """A copy of the float32 ``model`` whose convolutions named in ``params`` are :class:`Int8Conv2d`."""
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "qnnpack"
    targets = dict(model.named_modules())
    memo = {}  # the float weights of the convolutions to quantise are not copied (their copies are replaced)
    for name in params:
        memo[id(targets[name])] = nn.Identity()
    out = copy.deepcopy(model, memo)
    for name, values in params.items():
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, Int8Conv2d(targets[name], values))
    return out


__all__ = ["MIN_WEIGHTS", "Int8Conv2d", "QParams", "calibrate_convs", "eligible_convs", "quantize_convs"]
