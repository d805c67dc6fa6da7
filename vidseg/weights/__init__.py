"""Weights shipped inside the package (this folder), so a learned method runs with no download.

Each bundled ``NAME.pt`` is an inference-only checkpoint (see :func:`vidseg.models.checkpoint.export_weights`)
whose ``meta`` is its model card in short: what it was trained on, the data's licence, the command, the
training time, its held-out J&F next to the flow method's on the same videos, and the working size it
was trained for; ``NAME.json`` repeats that card so it can be read without torch. ``docs/model_card.md``
is the long form. Importing this module does not import torch.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from vidseg.errors import VidsegError
from vidseg.registry import get_method, method_names

WEIGHTS_DIR = Path(__file__).resolve().parent
_REINSTALL = "reinstall vidseg (pip install --force-reinstall vidseg) or choose --method flow"


def bundled_path(method: str) -> Path:
    """Where the bundled weights of ``method`` live (whether or not the file is there)."""
    file = get_method(method).bundled
    if file is None:
        raise VidsegError(
            f"no weights are bundled for {method!r}",
            fix=f"pass --checkpoint FILE.pt (bundled: {', '.join(_declared())})",
        )
    return WEIGHTS_DIR / file


def _declared() -> list[str]:
    return [name for name in method_names() if get_method(name).bundled]


def bundled_methods() -> list[str]:
    """The methods whose bundled weights (declared in :mod:`vidseg.registry`) are installed."""
    return [method for method in _declared() if bundled_path(method).is_file()]


def require_bundled(method: str) -> Path:
    """The bundled checkpoint of ``method``; a clear error when it is missing."""
    path = bundled_path(method)
    if not path.is_file():
        raise VidsegError(f"the bundled {method} weights are missing", path, _REINSTALL)
    return path


@cache
def bundled_content(method: str) -> dict[str, Any]:
    """The checked content of a bundled checkpoint (read once per process)."""
    from vidseg.models.checkpoint import read_checkpoint

    path = require_bundled(method)
    try:
        content = read_checkpoint(path)
    except VidsegError as exc:
        raise VidsegError(f"the bundled {method} weights are unusable: {exc}", fix=_REINSTALL) from exc
    if content["method"] != method:
        raise VidsegError(f"the bundled {method} file holds a {content['method']} network", path, _REINSTALL)
    return content


@cache
def _card(method: str) -> dict[str, Any]:
    card_path = require_bundled(method).with_suffix(".json")
    if not card_path.is_file():
        return dict(bundled_content(method).get("meta", {}))
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise VidsegError(f"the bundled {method} model card is unreadable ({exc})", card_path, _REINSTALL) from exc
    if not isinstance(card, dict):
        raise VidsegError(f"the bundled {method} model card is not a JSON object", card_path, _REINSTALL)
    return card


@cache
def heldout_table() -> dict[str, Any]:
    """Held-out scores of the methods without trained weights (``heldout.json`` here: ``videos`` and
    ``methods`` -> name -> ``J&F``, ``J``, ``F``, ``frames/s``, plus the ``command`` that measured them);
    empty when the file is absent."""
    path = WEIGHTS_DIR / "heldout.json"
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VidsegError(f"the held-out score table is unreadable ({exc})", path, _REINSTALL) from exc
    return table if isinstance(table, dict) else {}


def bundled_card(method: str) -> dict[str, Any]:
    """The model card facts of a bundled checkpoint (its ``.json`` beside it, else the checkpoint's ``meta``)."""
    return dict(_card(method))


__all__ = ["WEIGHTS_DIR", "bundled_card", "bundled_content", "bundled_methods", "bundled_path", "heldout_table",
           "require_bundled"]
