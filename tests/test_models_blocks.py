"""Backbones and S2S/HS2S building blocks: shapes, zero-init extra channels, weights, ConvLSTM learning."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

from vidseg.errors import VidsegError
from vidseg.models import (
    ConvLSTMCell,
    CosineMatcher,
    GlobalConvBlock,
    UpsampleDecoder,
    build_backbone,
    cosine_similarity_map,
    imagenet_weights_path,
)


def _expected_sizes(h: int, w: int) -> list[tuple[int, int]]:
    return [(-(-h // s), -(-w // s)) for s in (2, 4, 8, 16, 32)]


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
@pytest.mark.parametrize("size", [(64, 96), (96, 160)])
@pytest.mark.parametrize("in_channels", [3, 4])
def test_backbone_shapes(name, size, in_channels):
    torch.manual_seed(0)
    net = build_backbone(name, in_channels=in_channels).eval()
    with torch.no_grad():
        feats = net(torch.randn(2, in_channels, *size))
    assert len(feats) == 5 and len(net.channels) == 5 and net.strides == (2, 4, 8, 16, 32)
    for f, c, hw in zip(feats, net.channels, _expected_sizes(*size)):
        assert f.shape == (2, c, *hw)


def test_resnet50_shapes_once():
    net = build_backbone("resnet50", in_channels=4).eval()
    assert net.channels == (64, 256, 512, 1024, 2048)
    with torch.no_grad():
        feats = net(torch.randn(1, 4, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]


def test_wrong_channel_count_and_unknown_name():
    net = build_backbone("resnet18", in_channels=4)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(VidsegError, match="unknown backbone"):
        build_backbone("alexnet")


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_extra_channels_zero_init_match_pretrained(name, tmp_path):
    """At step 0 an RGB+mask backbone from pretrained weights equals the RGB torchvision network."""
    torch.manual_seed(0)
    reference = getattr(tvm, name)(weights=None).eval()
    path = tmp_path / f"{name}.pth"
    # The classifier head is optional in the file (the backbone drops it); leaving it out keeps this fast.
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}, path)
    rgb = build_backbone(name, in_channels=3, weights=path).eval()
    rgbm = build_backbone(name, in_channels=4, weights=path).eval()
    x = torch.randn(2, 3, 64, 96)
    mask = (torch.rand(2, 1, 64, 96) > 0.5).float()
    with torch.no_grad():
        a = rgb(x)
        b = rgbm(torch.cat([x, mask], dim=1))
        if name == "vgg16":
            ref_last = reference.features(x)
        else:
            r = reference
            ref_last = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
    for fa, fb in zip(a, b):
        torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    torch.testing.assert_close(a[-1], ref_last)
    # The extra filters are trainable: after a change the mask does affect the features.
    extra = rgbm.extra_conv.weight if name != "vgg16" else rgbm.stages[0][0].weight
    with torch.no_grad():
        extra.add_(0.1)
        assert not torch.allclose(rgbm(torch.cat([x, mask], 1))[-1], b[-1])


def test_weights_from_local_file_loaded(tmp_path):
    torch.manual_seed(1)
    ref = tvm.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net = build_backbone("resnet18", weights=path)
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight)
    torch.testing.assert_close(net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    # A file for another architecture is a clear user error.
    with pytest.raises(VidsegError, match="do not match torchvision resnet34"):
        build_backbone("resnet34", weights=path)
    with pytest.raises(VidsegError, match="not found"):
        build_backbone("resnet18", weights=tmp_path / "nope.pth")


def test_imagenet_weights_local_hub_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    expected = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_path("resnet18") == expected
    with pytest.raises(VidsegError) as err:
        build_backbone("resnet18", weights="imagenet")
    text = str(err.value)
    assert str(expected) in text and "never downloads" in text and "IMAGENET1K_V1" in text
    # Once the file is in the cache it is used.
    expected.parent.mkdir(parents=True)
    torch.manual_seed(2)
    ref = tvm.resnet18(weights=None)
    torch.save(ref.state_dict(), expected)
    net = build_backbone("resnet18", in_channels=4, weights="imagenet")
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight)


@pytest.mark.parametrize("size", [(8, 8), (5, 11), (16, 6)])
def test_convlstm_state_follows_input(size):
    cell = ConvLSTMCell(3, 6)
    x = torch.randn(2, 3, *size)
    h, (h2, c) = cell(x)
    assert h.shape == c.shape == (2, 6, *size) and h is h2
    h, state = cell(x, (h, c))
    assert state[1].shape == (2, 6, *size)
    with pytest.raises(ValueError, match="does not match"):
        cell(torch.randn(2, 3, size[0] + 1, size[1]), state)


def test_convlstm_activations_and_gradients():
    relu_cell = ConvLSTMCell(2, 4, kernel_size=5)
    h, _ = relu_cell(torch.randn(1, 2, 7, 9))
    assert (h >= 0).all()  # sigmoid gates and ReLU state output are non-negative
    tanh_cell = ConvLSTMCell(2, 4, state_activation="tanh", candidate_activation="tanh")
    x = torch.randn(1, 2, 7, 9, requires_grad=True)
    state = None
    for _ in range(3):
        h, state = tanh_cell(x, state)
    h.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tanh_cell.parameters())
    with pytest.raises(ValueError):
        ConvLSTMCell(2, 4, kernel_size=4)


def test_convlstm_fits_toy_sequence():
    """Target at step t is the input at step t-1: only solvable with memory."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(1, 8, kernel_size=3)
    readout = torch.nn.Conv2d(8, 1, 1)
    opt = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=1e-2)
    xs = (torch.rand(6, 4, 1, 8, 8) > 0.5).float()  # (T, B, 1, H, W)

    def loss_fn() -> torch.Tensor:
        state, total = None, 0.0
        for t in range(xs.shape[0]):
            h, state = cell(xs[t], state)
            if t > 0:
                total = total + torch.nn.functional.binary_cross_entropy_with_logits(readout(h), xs[t - 1])
        return total / (xs.shape[0] - 1)

    first = loss_fn().item()
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_global_conv_block_shape():
    block = GlobalConvBlock(6, 5, k=7, inner=4)
    assert block(torch.randn(2, 6, 3, 5)).shape == (2, 5, 3, 5)
    assert block(torch.randn(1, 6, 9, 4)).shape == (1, 5, 9, 4)


def test_cosine_similarity_map():
    torch.manual_seed(0)
    q, k = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 4, 4)
    out = cosine_similarity_map(q, k)
    assert out.shape == (2, 2, 3, 5) and out.abs().max() <= 1 + 1e-6
    # Identical features: best match is exactly 1; chunking does not change the result.
    assert torch.allclose(cosine_similarity_map(k, k)[:, 0], torch.ones(2, 4, 4))
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4] = 1  # top half of the key is foreground
    full = cosine_similarity_map(q, k, mask)
    torch.testing.assert_close(full, cosine_similarity_map(q, k, mask, chunk=4))
    sim = torch.einsum("bcq,bck->bqk", torch.nn.functional.normalize(q.flatten(2), dim=1),
                       torch.nn.functional.normalize(k.flatten(2), dim=1))
    torch.testing.assert_close(full[:, 0].flatten(1), sim[:, :, :8].amax(-1))
    torch.testing.assert_close(full[:, 3].flatten(1), sim[:, :, 8:].mean(-1))
    empty = cosine_similarity_map(q, k, torch.zeros(2, 1, 4, 4))
    assert (empty[:, :2] == 0).all()  # no foreground key: fg statistics are 0
    matcher = CosineMatcher(8, 3)
    assert matcher(q, k, mask).shape == (2, 3, 3, 5)


@pytest.mark.parametrize("merge", ["add", "concat"])
def test_decoder_shapes_and_skip_memory_round_trip(merge):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", in_channels=4).eval()
    widths = (16, 8, 8, 4, 4)
    dec = UpsampleDecoder(
        32, skip_channels=backbone.channels[3::-1], widths=widths, kernel_size=5,
        skip_memory=True, skip_memory_channels=6, merge=merge, n_border_classes=3,
    )
    for size in [(64, 96), (96, 160)]:
        with torch.no_grad():
            feats = backbone(torch.randn(2, 4, *size))
        h = torch.randn(2, 32, *feats[-1].shape[-2:])
        skips = feats[3::-1]
        logits, state, border = dec(h, skips)
        assert logits.shape == (2, 1, *size)
        assert border.shape == (2, 3, *size)
        assert state[0].shape == state[1].shape == (2, 6, *feats[3].shape[-2:])
        logits2, state2, _ = dec(h, skips, state)  # state round trip: same shapes, new values
        assert logits2.shape == logits.shape and state2[1].shape == state[1].shape
        assert not torch.equal(state2[1], state[1])
    # Odd input sizes: the last stage goes to the requested output size.
    plain = UpsampleDecoder(8, widths=(4, 4, 4, 4, 4))
    logits, state, border = plain(torch.randn(1, 8, 2, 3), output_size=(50, 90))
    assert logits.shape == (1, 1, 50, 90) and state is None and border is None
    with pytest.raises(ValueError, match="skips"):
        dec(h, skips[:2])
