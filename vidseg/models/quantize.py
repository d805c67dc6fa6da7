"""int8 inference for the large convolutions of a network, through PyTorch's own quantisation tooling.

Static quantisation with calibration: :func:`calibrate_convs` runs the float network with ``torch.ao.quantization``
observers on the input and output of every large ``nn.Conv2d`` and returns their scales and zero points;
:func:`quantize_convs` returns a copy in which those convolutions are :class:`Int8Conv2d`: int8 weights per output
channel, uint8 activations per tensor, computed by PyTorch's quantised convolution kernels (``quantized::conv2d``,
FBGEMM's, the kernels behind ``torch.ao.nn.quantized.Conv2d``). Everything else (element-wise gates, small and
depthwise convolutions, the heads) stays float32, since quantising and de-quantising around a small convolution costs
more than it saves (measured on a 2-core AVX2 EPYC: a 256-channel 3x3 conv 2.2x faster in int8, a 64-channel one
slower). Activations are observed by min and max (a histogram observer gave the same held-out J&F).

An int8 network's state dict holds plain tensors, so it is saved as an int8 export and loaded without its float
weights (:func:`int8_shells`, :func:`vidseg.models.optimize.load_for_inference`).
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
# Weights are packed for the kernels in slices of at most this many values (32 MB of int8).
PACK_VALUES = 1 << 25

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
    """A convolution computed in int8 that takes and returns float tensors (any float dtype in, float32 out).

    Its state dict holds plain tensors only (``weight`` int8, ``weight_scale`` per output channel, ``bias``,
    ``activation`` = input scale, zero point, output scale, zero point), so an int8 network saves and loads
    with ``torch.load(weights_only=True)``. Built from a ``meta`` convolution without ``params`` it is an empty
    shell that ``load_state_dict`` fills (see :func:`int8_shells`)."""

    def __init__(self, conv: nn.Conv2d, params: tuple[float, int, float, int] | None = None):
        super().__init__()
        self.geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        self.has_bias = conv.bias is not None
        self._packed: list | None = None  # FBGEMM's packed int8 weights (ScriptObjects), by slices of output channels
        self.activation: tuple[float, int, float, int] | None = None
        if params is not None:
            weight = conv.weight.detach().float()
            # symmetric per output channel, as FBGEMM expects
            scales = (weight.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8)
            values = torch.round(weight / scales.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
            bias = None if conv.bias is None else conv.bias.detach().float()
            self._pack(values, scales, bias, params)

    def _pack(self, values: Tensor, scales: Tensor, bias: Tensor | None, params: tuple[float, int, float, int]) -> None:
        select_engine()
        stride, padding, dilation, groups = self.geometry
        # Packed in slices of output channels (exact, and as fast), so that packing holds one slice's copy at a time.
        step = values.shape[0] if groups > 1 else max(1, PACK_VALUES // values[0].numel())
        self._packed = []
        for start in range(0, values.shape[0], step):
            part = slice(start, start + step)
            qweight = torch._make_per_channel_quantized_tensor(
                values[part].contiguous(), scales[part].double(), torch.zeros_like(scales[part], dtype=torch.long), 0)
            self._packed.append(torch.ops.quantized.conv2d_prepack(
                qweight, None if bias is None else bias[part].contiguous(), stride, padding, dilation, groups))
            del qweight
        self.activation = (float(params[0]), int(params[1]), float(params[2]), int(params[3]))

    def _unpacked(self) -> tuple[Tensor, Tensor, Tensor | None]:
        parts = [packed.unpack() for packed in self._packed]
        values = torch.cat([qweight.int_repr() for qweight, _ in parts])
        scales = torch.cat([qweight.q_per_channel_scales().float() for qweight, _ in parts])
        bias = None if parts[0][1] is None else torch.cat([b for _, b in parts])
        return values, scales, bias

    def forward(self, x: Tensor) -> Tensor:
        in_scale, in_zero, out_scale, out_zero = self.activation
        q = torch.quantize_per_tensor(x.float(), in_scale, in_zero, torch.quint8)
        outputs = [torch.ops.quantized.conv2d(q, packed, out_scale, out_zero).dequantize() for packed in self._packed]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def take_state(self, state_dict: dict[str, Tensor], prefix: str) -> None:
        """Fill this convolution from ``state_dict``, removing its entries: each int8 weight is freed as soon as it is
        packed, so loading a network this way holds its int8 weights about once, not twice or three times."""
        self._fill(state_dict, prefix, state_dict.pop)

    def _fill(self, state_dict: dict[str, Tensor], prefix: str, get: Callable[[str], Tensor]) -> None:
        bias = get(prefix + "bias").float() if self.has_bias else None
        scales = get(prefix + "weight_scale").float()
        params = tuple(get(prefix + "activation").tolist())
        self._pack(get(prefix + "weight"), scales, bias, params)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        values, scales, bias = self._unpacked()
        destination[prefix + "weight"] = values
        destination[prefix + "weight_scale"] = scales
        if bias is not None:
            destination[prefix + "bias"] = bias
        destination[prefix + "activation"] = torch.tensor(self.activation, dtype=torch.float64)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        names = ["weight", "weight_scale", "activation"] + (["bias"] if self.has_bias else [])
        if self._packed is not None and not any(prefix + name in state_dict for name in names):
            return  # filled by take_state already
        missing = [prefix + name for name in names if prefix + name not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        if state_dict[prefix + "weight"].dtype != torch.int8:
            error_msgs.append(f"{prefix}weight: an int8 convolution needs int8 weights, got "
                              f"{state_dict[prefix + 'weight'].dtype}")
            return
        self._fill(state_dict, prefix, state_dict.__getitem__)

    def __deepcopy__(self, memo: dict) -> Int8Conv2d:
        copied = self.__class__.__new__(self.__class__)
        memo[id(self)] = copied
        nn.Module.__init__(copied)
        copied.geometry, copied.has_bias, copied.activation = self.geometry, self.has_bias, self.activation
        copied._packed = None
        if self._packed is not None:
            values, scales, bias = self._unpacked()
            copied._pack(values, scales, bias, self.activation)
        return copied

    def extra_repr(self) -> str:
        return "empty" if self._packed is None else f"activation={self.activation}"


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` computes some convolutions in int8."""
    return any(isinstance(m, Int8Conv2d) for m in model.modules())


def check_int8_network(model: nn.Module, dtype: str) -> bool:
    """Whether ``model`` is int8 already (an int8 export, calibrated once); such a network runs in int8 only."""
    calibrated = is_int8(model)
    if calibrated and dtype != "int8":
        raise ValueError(f"this network holds int8 weights (an int8 export): run it with dtype int8, not {dtype}")
    return calibrated


def resume_int8(model: nn.Module, saved: QParams | None, int8: bool, calibrated: bool,
                started: bool) -> tuple[QParams | None, nn.Module | None]:
    """A propagator's per-video int8 state from what its ``state_dict`` kept (``saved``: the calibrated parameters,
    or None): the parameters and this video's int8 copy of the float ``model``, or (None, None). ``int8``: the
    propagator runs in int8; ``calibrated``: its network is an int8 export; ``started``: the saved video had begun.
    A state saved in another precision than the propagator's is refused."""
    if saved is not None:
        if not int8:
            raise ValueError("the saved state ran in int8; resume with --dtype int8")
        params = {name: tuple(values) for name, values in saved.items()}
        return params, quantize_convs(model, params)
    if int8 and not calibrated and started:
        raise ValueError("the saved state did not run in int8; resume with the same --dtype")
    return None, None


def int8_shells(model: nn.Module, names: list[str]) -> None:
    """Replace the named convolutions of ``model`` (in place; e.g. one built on the ``meta`` device) with empty
    :class:`Int8Conv2d` that ``load_state_dict`` fills, so an int8 network loads without its float weights."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Conv2d(parent.get_submodule(child)))


def int8_names(state_dict: dict[str, Tensor]) -> list[str]:
    """The int8 convolutions a state dict of an int8 network holds (the keys with a ``weight_scale``)."""
    return [key[: -len(".weight_scale")] for key in state_dict if key.endswith(".weight_scale")]


def select_engine() -> None:
    """FBGEMM's kernels where PyTorch has them (every x86 build), else QNNPACK (ARM). PyTorch's default x86 engine
    packs convolutions for oneDNN and keeps the int8 weights beside the packed copy: twice the memory (a full HS2S
    held 754 MB of int8 weights instead of 377), for 10-25 % more speed on an AVX-512 VNNI EPYC."""
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in engines else "qnnpack"


def quantize_convs(model: nn.Module, params: QParams) -> nn.Module:
    """A copy of the float32 ``model`` whose convolutions named in ``params`` are :class:`Int8Conv2d`."""
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


__all__ = ["MIN_WEIGHTS", "Int8Conv2d", "QParams", "calibrate_convs", "check_int8_network", "eligible_convs",
           "int8_names", "int8_shells", "is_int8", "quantize_convs", "resume_int8", "select_engine"]
