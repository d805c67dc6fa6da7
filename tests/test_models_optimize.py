"""optimize_for_inference / load_for_inference keep the network's function (folded BN, channels-last, bf16)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vidseg.models.optimize import load_for_inference, optimize_for_inference
from vidseg.models.s2s import build_model, preset

SMALL = {
    "hs2s": {"backbone": "resnet18", "bottleneck": 64, "hidden": 64, "decoder_widths": (64, 32, 16, 16, 16),
                 "gc_inner": 32, "skip_memory_channels": 32},
    "s2s": {"bottleneck": 64, "hidden": 64, "decoder_widths": (64, 32, 16, 16, 16)},  # VGG-16
    "s2s++": {"backbone": "convnet-tiny", "bottleneck": 32, "hidden": 32, "decoder_widths": (32, 32, 16, 16, 16)},
    "hs2s_match": {"backbone": "convnet-tiny", "bottleneck": 32, "hidden": 32, "decoder_widths": (32, 32, 16, 16, 16)},
    # timm's EfficientNet blocks: BatchNormAct2d folded, its ReLU6 kept; HS2S's mask stem conv beside conv_stem
    "hs2s_lite0": {"backbone": "efficientnet_lite0", "backbone_weights": None, "bottleneck": 32, "hidden": 32,
                   "decoder_widths": (32, 32, 16, 16, 16), "gc_inner": 16, "skip_memory_channels": 16},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Many small ops: one thread is faster, and not slowed down by other processes sharing the CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(method: str) -> nn.Module:
    """A small network whose BatchNorm statistics and mask stem are not the trivial initial values."""
    if method not in _CACHE:
        _CACHE[method] = _build(method)
    return copy.deepcopy(_CACHE[method])


_CACHE: dict[str, nn.Module] = {}


def _build(method: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(preset(method.removesuffix("_lite0"), **SMALL[method]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if "extra_conv" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def _run(model: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = False, frames: int = 3):
    """Probabilities of ``frames`` steps after init_state, two objects batched, size 64x64."""
    gen = torch.Generator().manual_seed(2)
    video = [torch.rand(1, 3, 64, 64, generator=gen) for _ in range(frames + 1)]
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 8:30, 10:40] = 1
    masks[1, :, 30:60, 20:50] = 1
    out = []
    with torch.inference_mode():
        video = [f.to(dtype) for f in video]
        if channels_last:
            video = [f.contiguous(memory_format=torch.channels_last) for f in video]
        state = model.init_state(video[0], masks.to(dtype))
        prev = masks.to(dtype)
        for frame in video[1:]:
            step, state = model.step(frame, prev, state)
            prev = torch.sigmoid(step.logits)
            out.append(prev.float())
            if step.border_logits is not None:
                out.append(step.border_logits.float())
    return out


@pytest.mark.parametrize("method", ["hs2s", "s2s", "s2s++", "hs2s_lite0"])
def test_folded_channels_last_same_outputs(method):
    model = _model(method)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _run(model)
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    had_bn = any(isinstance(m, nn.BatchNorm2d) for m in _CACHE[method].modules())
    assert had_bn == any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original keeps its BN
    for got, want in zip(_run(fast, channels_last=True), expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # The original is untouched: same tensors, same outputs, still trainable.
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(p.requires_grad for p in model.parameters())
    for got, want in zip(_run(model), expected):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["hs2s", "s2s++"])
def test_bfloat16_close(method):
    model = _model(method)
    expected = _run(model)
    fast = optimize_for_inference(model, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    got = _run(fast, torch.bfloat16, channels_last=True)
    # Mask probabilities (every other entry for HS2S/S2S++, which also return border logits).
    for g, w in zip(got[::2], expected[::2]):
        assert (g - w).abs().max().item() < 0.05
        assert ((g > 0.5) == (w > 0.5)).float().mean().item() > 0.99


@pytest.mark.parametrize(("method", "dtype"), [("hs2s", torch.float32), ("hs2s", torch.bfloat16),
                                               ("hs2s_match", torch.float32), ("hs2s_lite0", torch.float32)])
def test_load_for_inference_equals_optimized_copy(method, dtype):
    model = _model(method)
    fast = optimize_for_inference(model, dtype=dtype)
    loaded = load_for_inference(model.cfg, fast.state_dict(), dtype=dtype)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    for got, want in zip(_run(loaded, dtype, channels_last=True), _run(fast, dtype, channels_last=True)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_load_for_inference_rejects_unfolded_state_dict():
    model = _model("s2s++")
    with pytest.raises(RuntimeError):
        load_for_inference(model.cfg, model.state_dict())


def test_wide_dense_convolutions_run_contiguous_in_a_channels_last_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1024, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)).eval()
    x = torch.randn(1, 1024, 6, 8)
    with torch.inference_mode():
        expected = model(x)
    fast = optimize_for_inference(model)  # oneDNN runs such 5x5 convolutions faster in the contiguous layout
    assert fast[0].weight.is_contiguous() and fast[2].weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    fast[0].register_forward_hook(lambda module, args, out: seen.append(args[0].is_contiguous()))
    with torch.inference_mode():
        out = copy.deepcopy(fast)(x.contiguous(memory_format=torch.channels_last))
        fast(x.contiguous(memory_format=torch.channels_last))
    assert seen == [True, True] and out.is_contiguous  # the copy keeps the layout hooks(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
