"""Building a registered method (:mod:`vidseg.registry`) for a session, and choosing the default one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vidseg.errors import VidsegError
from vidseg.inference.session import Propagator
from vidseg.machine import warn_if_emulated_bf16
from vidseg.registry import MethodSpec, get_method, method_names, zero_shot_methods
from vidseg.weights import (
    bundled_card,
    bundled_content,
    bundled_methods,
    bundled_path,
    heldout_table,
)


def runnable_methods(zero_shot: bool = False) -> list[str]:
    """The methods that build without a checkpoint (no weights, or bundled ones); with ``zero_shot`` only
    those that discover objects without a mask."""
    bundled = bundled_methods()
    return [name for name in method_names()
            if (not get_method(name).needs_checkpoint or name in bundled)
            and (not zero_shot or get_method(name).zero_shot)]


def build_propagator(
    method: str | None = None, checkpoint: str | os.PathLike | None = None, **options: Any
) -> Propagator:
    """Build a method by name, with the weights of ``checkpoint`` (a ``vidseg train`` file; its method must
    match ``method`` when both are given) or, for a method with weights and no checkpoint, the bundled ones.
    ``options`` are the method's settings (``device``, ``dtype``, ``max_side``, ...); None values are left
    to the method's defaults, except ``dtype``: ``auto`` (the default) is resolved by
    :func:`vidseg.machine.resolve_dtype` (bfloat16 only where the device runs it natively). Freed memory goes back
    to the system while the weights load (:func:`vidseg.machine.memory_returned_on_free`): an int8 export of the full
    HS2S peaks about 300 MB lower."""
    from vidseg.machine import memory_returned_on_free

    with memory_returned_on_free():
        return _build_propagator(method, checkpoint, **options)


def _build_propagator(method: str | None, checkpoint: str | os.PathLike | None, **options: Any) -> Propagator:
    from vidseg.models.checkpoint import read_checkpoint

    options = {key: value for key, value in options.items() if value is not None}
    if checkpoint is not None:
        content, source = read_checkpoint(checkpoint), checkpoint
        found = content["method"]
        if method is not None and method != found:
            raise VidsegError(f"checkpoint holds a {found} network, not {method}", checkpoint, f"use --method {found}")
        spec = get_method(found)
    elif method is None:
        raise VidsegError("no method given", fix="pass --method NAME or --checkpoint FILE.pt")
    else:
        spec = get_method(method)
        content, source = _bundled(spec) if spec.needs_checkpoint else (None, None)
    if checkpoint is not None and not spec.needs_checkpoint:
        raise VidsegError(f"--checkpoint does not apply to {spec.name}: it has no weights",
                          fix="drop --checkpoint or choose a method with weights")
    precision = None
    if "dtype" in spec.options:
        precision = _resolve_precision(spec, options.get("dtype"), options.get("device", "cpu"), content, source)
        options["dtype"] = precision[0]
    on_cpu = str(options.get("device", "cpu")).startswith("cpu")
    if options.get("dtype") == "int8":
        if not spec.int8:
            int8 = ", ".join(name for name in method_names() if get_method(name).int8)
            raise VidsegError(f"--dtype int8 does not apply to {spec.name}", fix=f"use it with {int8}, or drop it")
        if not on_cpu:
            raise VidsegError("--dtype int8 runs on the CPU only", fix="drop --device or use --dtype bfloat16 on a GPU")
    if options.get("dtype") == "bfloat16" and on_cpu:
        warn_if_emulated_bf16("use --dtype float32")
    builder = spec.load("propagator")
    propagator = builder(content, source, **options) if spec.needs_checkpoint else builder(**options)
    propagator.precision = precision
    return propagator


def _resolve_precision(spec: MethodSpec, dtype: str | None, device: str, content: dict[str, Any] | None,
                       source: os.PathLike | str | None) -> tuple[str, str]:
    """(dtype, why): ``auto`` as :func:`vidseg.machine.resolve_dtype` says where the method takes bfloat16 (float32
    elsewhere), except for an int8 export, which runs in int8 only."""
    from vidseg.machine import resolve_dtype
    from vidseg.models.checkpoint import is_int8_checkpoint

    if content is not None and is_int8_checkpoint(content):
        if dtype in (None, "auto"):
            return "int8", "auto: an int8 export"
        if dtype != "int8":
            raise VidsegError(f"this checkpoint holds int8 weights (an int8 export); --dtype {dtype} cannot run it",
                              source, "use --dtype int8 or auto, or pass the float checkpoint it was exported from")
    resolved, reason = resolve_dtype(dtype, device)
    if resolved not in (*spec.precisions, "int8"):
        if dtype not in (None, "auto"):
            takes = ", ".join([*spec.precisions, *(["int8"] if spec.int8 else [])])
            raise VidsegError(f"--dtype {dtype} does not apply to {spec.name}", fix=f"use one of: {takes}, auto")
        return spec.precisions[0], f"auto: {spec.name} runs in {spec.precisions[0]}"
    return resolved, reason


def _bundled(spec: MethodSpec) -> tuple[dict[str, Any], os.PathLike]:
    if spec.name not in bundled_methods():
        bundled = f"; bundled: {', '.join(bundled_methods())}" if bundled_methods() else ""
        raise VidsegError(
            f"method {spec.name!r} needs trained weights{bundled}",
            bundled_path(spec.name) if spec.bundled else None,
            f"pass --checkpoint FILE.pt (train one with `vidseg train configs/{spec.name}.yaml`)",
        )
    return bundled_content(spec.name), bundled_path(spec.name)


@dataclass(frozen=True)
class MethodChoice:
    name: str
    reason: str


def heldout_scores() -> tuple[dict[str, float], str]:
    """Held-out J&F of every runnable one-shot method that has one: weightless methods from
    ``vidseg/weights/heldout.json``, bundled one-shot networks from their model cards (which also record flow's
    score on the same videos, used when the table has none; a card with ``mode: zero-shot`` holds a network that
    discovers objects, scored without masks). Returns (scores, what the videos are)."""
    table = heldout_table()
    scores = {name: float(row["J&F"]) for name, row in table.get("methods", {}).items()
              if name in method_names() and not get_method(name).needs_checkpoint}
    videos = table.get("videos", "")
    for method in bundled_methods():
        heldout = bundled_card(method).get("heldout", {})
        one_shot = get_method(method).one_shot and bundled_card(method).get("mode", "one-shot") == "one-shot"
        if one_shot and heldout.get("J&F") is not None:
            scores[method] = float(heldout["J&F"])
            if heldout.get("flow J&F") is not None:
                scores.setdefault("flow", float(heldout["flow J&F"]))
            videos = videos or heldout.get("videos", "")
    return scores, videos or "its held-out videos"


def choose_default_method(zero_shot: bool = False) -> MethodChoice:
    """The best runnable method. One-shot: the highest held-out J&F among the methods that have one (see
    :func:`heldout_scores`), flow when none has. Zero-shot: the runnable method that discovers objects with
    the best held-out J&F on its card (the first registered one when no card says)."""
    if zero_shot:
        return _choose_zero_shot()
    scores, videos = heldout_scores()
    if not scores:
        return MethodChoice("flow", "no held-out scores are installed")
    best = max(scores, key=lambda name: scores[name])
    others = ", ".join(f"{name} {score:.3f}" for name, score in sorted(scores.items(), key=lambda kv: -kv[1])
                       if name != best)
    return MethodChoice(best, f"best held-out J&F {scores[best]:.3f}" + (f" (vs {others})" if others else "")
                        + f" on {videos}")


def _choose_zero_shot() -> MethodChoice:
    candidates = runnable_methods(zero_shot=True)
    if not candidates:
        known = zero_shot_methods()
        if not known:
            raise VidsegError("no installed method discovers objects without a mask",
                              fix="pass --mask FIRST.png with the objects to follow")
        raise VidsegError(f"the methods that discover objects need trained weights: {', '.join(known)}",
                          fix=f"pass --method {known[0]} --checkpoint FILE.pt, or --mask FIRST.png")

    def score(name: str) -> float:
        value = bundled_card(name).get("heldout", {}).get("J&F") if name in bundled_methods() else None
        return float("-inf") if value is None else float(value)

    best = max(candidates, key=score)  # max keeps the first of equals: registration order
    reason = "discovers objects without a mask" + (f"; held-out J&F {score(best):.3f}" if score(best) > -1 else "")
    return MethodChoice(best, reason)


def default_method(zero_shot: bool = False) -> str:
    """The name of the best runnable method (see :func:`choose_default_method`)."""
    return choose_default_method(zero_shot).name


__all__ = ["MethodChoice", "build_propagator", "choose_default_method", "default_method", "heldout_scores",
           "runnable_methods"]
