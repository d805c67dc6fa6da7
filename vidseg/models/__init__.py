"""Network parts: feature backbones and the S2S / HS2S building blocks (weights only, no video state)."""

from vidseg.models.backbones import (
    BACKBONE_NAMES,
    Backbone,
    ResNetBackbone,
    VGGBackbone,
    build_backbone,
    imagenet_weights_path,
)
from vidseg.models.blocks import (
    ConvLSTMCell,
    CosineMatcher,
    GlobalConvBlock,
    LSTMState,
    UpsampleDecoder,
    cosine_similarity_map,
)

__all__ = [
    "BACKBONE_NAMES",
    "Backbone",
    "ConvLSTMCell",
    "CosineMatcher",
    "GlobalConvBlock",
    "LSTMState",
    "ResNetBackbone",
    "UpsampleDecoder",
    "VGGBackbone",
    "build_backbone",
    "cosine_similarity_map",
    "imagenet_weights_path",
]
