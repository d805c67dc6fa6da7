"""The OVSNet network: config checks, detections with masks and embeddings, the MGA attention and refiner (no
gradient into the detector), the batch-hard triplet loss, and COCO Mask R-CNN weights from a local file."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_OVSNET, tiny_ovsnet

from vidseg.errors import VidsegError
from vidseg.models.losses import batch_hard_triplet_loss
from vidseg.models.ovsnet import (
    OVSNetConfig,
    build_model,
    enlarge_boxes,
    guided_attention,
)


def test_config_round_trip_and_checks():
    cfg = OVSNetConfig(**TINY_OVSNET)
    assert OVSNetConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"anchor_sizes": [8, 16]}, {"rho_iou": 1.0}, {"reid_dropout": 1.0}, {"mga_enlarge": 0.9},
                {"method": "rvos"}):
        with pytest.raises(ValueError):
            OVSNetConfig(**{**TINY_OVSNET, **bad})
    with pytest.raises(ValueError, match="unknown model option"):
        OVSNetConfig.from_dict({"backbone": "convnet-tiny", "slots": 3})


def test_detect_gives_boxes_masks_and_embeddings_in_frame_coordinates():
    model = tiny_ovsnet(score_threshold=0.0).eval()
    image = torch.rand(3, 48, 80)
    found = model.detect([image])[0]
    n = len(found.boxes)
    assert n > 0 and found.masks.shape == (n, 48, 80) and found.embeddings.shape == (n, 8)
    assert found.scores.shape == (n,) and bool((found.scores >= 0).all())
    assert float(found.boxes[:, [0, 2]].max()) <= 80 and float(found.boxes[:, [1, 3]].max()) <= 48
    assert 0 <= float(found.masks.min()) and float(found.masks.max()) <= 1
    assert found.image_size == (64, 106) and found.scale == pytest.approx((64 / 48, 106 / 80))  # floor(80 * 4 / 3)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.train().detect([image])


def test_eval_mode_detects_at_the_test_size_and_training_at_the_train_sizes():
    model = tiny_ovsnet(train_sizes=(64, 96), test_size=80)
    assert model.detector.transform.min_size == (64, 96)
    assert model.eval().detector.transform.min_size == (80,)


def test_boxes_are_enlarged_about_their_centre():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert enlarge_boxes(boxes, 1.2).tolist() == [pytest.approx([8.0, 16.0, 32.0, 64.0])]


def test_attention_is_the_mask_inside_and_one_half_on_the_added_border():
    inner = torch.ones(1, 1, 28, 28)
    attention = guided_attention(inner, 60, 1.2)
    assert attention.shape == (1, 1, 60, 60)
    assert float(attention[0, 0, 5:55, 5:55].min()) == pytest.approx(1.0)  # the box itself: 50 px, centred
    assert float(attention[0, 0, :5].max()) == 0.5 and float(attention[0, 0, :, 55:].max()) == 0.5


def test_refiner_loss_does_not_reach_the_detector():
    model = tiny_ovsnet()
    image_list, _, features = model.prepare([torch.rand(3, 64, 64)])
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0], [20.0, 10.0, 60.0, 50.0]])]
    inner = model.mask_probabilities(features, boxes, image_list.image_sizes)
    logits, enlarged = model.refine(features, boxes, inner, image_list.image_sizes)
    assert logits.shape == (2, 2, 16, 16) and len(enlarged) == 1
    logits.sum().backward()
    assert all(p.grad is None for p in model.detector.parameters())
    assert all(p.grad is not None for p in model.refiner.classifier.parameters())


def test_refine_masks_keeps_empty_masks_empty():
    model = tiny_ovsnet().eval()
    found = model.detect([torch.rand(3, 48, 64)])[0]
    masks = torch.zeros(2, 48, 64)
    masks[0, 10:30, 12:40] = 1
    refined = model.refine_masks(found, masks)
    assert refined.shape == (2, 48, 64)
    assert float(refined[1].abs().max()) == 0.0
    assert float(refined[0, 10:30, 12:40].mean()) > 0  # probabilities pasted over the mask's enlarged box
    assert float(refined[0, :, 50:].max()) == 0.0  # nothing beyond the enlarged box


def test_batch_hard_triplet_loss_known_values():
    labels = torch.tensor([0, 0, 1])
    easy = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # positives at 1, negatives at >= 2
    assert float(batch_hard_triplet_loss(easy, labels, margin=1.0)) == pytest.approx(0.0)
    hard = torch.tensor([[0.0], [2.0], [1.0]])  # each anchor: positive at 2, negative at 1
    assert float(batch_hard_triplet_loss(hard, labels, margin=1.0)) == pytest.approx(2.0)
    single = torch.zeros(2, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(single, torch.tensor([0, 0]))
    loss.backward()  # no negative: zero, still part of the graph
    assert float(loss.detach()) == 0.0


@pytest.mark.slow
def test_coco_mask_rcnn_weights_load_from_a_local_file(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(1)
    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "maskrcnn_coco.pth"
    torch.save(coco.state_dict(), path)
    model = build_model({"backbone": "resnet50", "detector_weights": str(path)})
    own, theirs = model.detector.state_dict(), coco.state_dict()
    for key in ("backbone.body.layer3.2.conv2.weight", "backbone.fpn.layer_blocks.1.0.weight",
                "rpn.head.cls_logits.weight", "roi_heads.box_head.fc7.weight", "roi_heads.mask_head.0.0.weight"):
        assert torch.equal(own[key], theirs[key]), key
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2  # class-agnostic: kept its own init
    with pytest.raises(VidsegError, match="holds no weights"):
        build_model({**TINY_OVSNET, "detector_weights": str(path)})
    with pytest.raises(VidsegError, match="not found"):
        build_model({**TINY_OVSNET, "detector_weights": str(tmp_path / "missing.pth")})


def test_the_detector_of_an_ovsnet_checkpoint_starts_a_second_phase(tmp_path):
    from vidseg.models.checkpoint import save_checkpoint

    first = tiny_ovsnet(reid_weight=0.0, refine_weight=0.0)
    path = save_checkpoint(tmp_path / "phase1.pt", {"method": "ovsnet", "model_config": first.cfg.to_dict(),
                                                    "model": first.state_dict()})
    torch.manual_seed(5)
    second = build_model({**TINY_OVSNET, "detector_weights": str(path)})
    for key, value in first.detector.state_dict().items():
        assert torch.equal(second.detector.state_dict()[key], value), key
    assert not torch.equal(second.reid[1].weight, first.reid[1].weight)  # only the detector is taken
