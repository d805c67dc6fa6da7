"""Network parts: feature backbones and the S2S / HS2S building blocks (weights only, no video state).

The names below are imported on first use (PEP 562), so importing a submodule (``vidseg.models.ops`` for the
session, say) does not import torchvision's model zoo, which costs about 1.5 s and 400 MB (it imports
``torch._dynamo``).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    **dict.fromkeys(("BACKBONE_NAMES", "Backbone", "ResNetBackbone", "VGGBackbone", "build_backbone",
                     "imagenet_weights_path"), "vidseg.models.backbones"),
    **dict.fromkeys(("ConvLSTMCell", "CosineMatcher", "GlobalConvBlock", "LSTMState", "UpsampleDecoder",
                     "cosine_similarity_map"), "vidseg.models.blocks"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'vidseg.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = sorted(_WHERE)
