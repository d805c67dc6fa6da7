"""Every registered method (and the plugin examples of tests/plugins) keeps the session contract: exact resume
through a state file, objects given later and removed ones, a shared network no video changes, and memory that
does not grow with the video. A method new to the registry is covered here without a line of its own, unless it
needs weights that are neither bundled nor buildable from a tiny config (add one to ``TINY_CONFIGS``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import PLUGINS, TINY_NETWORK, TINY_OVSNET, moving_squares
from torch import nn

from vidseg import registry
from vidseg.errors import VidsegError
from vidseg.inference.session import InferenceSession, Propagator
from vidseg.io.state_file import load_state, save_state
from vidseg.weights import bundled_content, bundled_methods, bundled_path

PLUGIN_MODULES = tuple(sorted(path.stem for path in PLUGINS.glob("*.py")))
SIDE = 96  # moving_squares' 64x96 frames at their own size


def _s2s_config(name: str) -> Any:
    from vidseg.models.s2s import preset

    return preset(name, **TINY_NETWORK)


def _ovsnet_config() -> Any:
    from vidseg.models.ovsnet import OVSNetConfig

    return OVSNetConfig(**TINY_OVSNET, collection=2)  # a short embedding collection: bounded within the test


TINY_CONFIGS = {"hs2s": lambda: _s2s_config("hs2s"), "s2s": lambda: _s2s_config("s2s"), "ovsnet": _ovsnet_config,
                "toy-foreground": lambda: registry.get_method("toy-foreground").load("config")()}
SETTINGS = {"match": {"memory": 2}}  # weightless methods' constructor settings beyond max_side
CONFIG_CHANGES = {"match_refine": {"memory": 2}, "hs2s": {"match_memory": 2}}  # memories that fill up in the test


@pytest.fixture(params=[*registry.method_names(), *(f"plugin:{name}" for name in PLUGIN_MODULES)])
def spec(request: pytest.FixtureRequest, plugin: Any) -> registry.MethodSpec:
    """The method's spec; a plugin example is imported and registered for the test only."""
    name = request.param
    return plugin(name.removeprefix("plugin:")).SPEC if name.startswith("plugin:") else registry.get_method(name)


def _checkpoint(spec: registry.MethodSpec) -> tuple[dict[str, Any], str]:
    """The bundled weights, else a seeded tiny untrained network of the method's config."""
    if spec.name in bundled_methods():
        content, source = bundled_content(spec.name), str(bundled_path(spec.name))
    else:
        if spec.name not in TINY_CONFIGS:
            pytest.fail(f"{spec.name} needs weights: add a tiny config to TINY_CONFIGS")
        config = TINY_CONFIGS[spec.name]()
        torch.manual_seed(0)
        model = spec.load("model")(config)
        content = {"method": spec.name, "model_config": config.to_dict(), "model": model.state_dict(),
                   "meta": {"max_side": SIDE}}
        source = f"tiny {spec.name}"
    changes = CONFIG_CHANGES.get(spec.name, {})
    return {**content, "model_config": {**content["model_config"], **changes}}, source


def build(spec: registry.MethodSpec, **settings: Any) -> Propagator:
    """A freshly built propagator, as ``build_propagator`` makes it (float32, at the frames' size)."""
    options = {key: value for key, value in (("max_side", SIDE), ("dtype", "float32")) if key in spec.options}
    builder = spec.load("propagator")
    if spec.needs_checkpoint:
        return builder(*_checkpoint(spec), **options, **settings)
    return builder(**options, **SETTINGS.get(spec.name, {}), **settings)


def networks(propagator: Propagator) -> dict[str, nn.Module]:
    """The networks a propagator holds (``model`` and any other shared module)."""
    return {name: value for name, value in vars(propagator).items() if isinstance(value, nn.Module)}


def discovers_only(spec: registry.MethodSpec) -> bool:
    return spec.zero_shot and not spec.one_shot


@pytest.fixture(scope="module")
def clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    return moving_squares(num_frames=12)


def only(mask: np.ndarray, object_id: int) -> np.ndarray:
    return np.where(mask == object_id, object_id, 0).astype(np.uint8)


def run(session: InferenceSession, frames: list[np.ndarray], given: dict[int, np.ndarray], start: int = 0
        ) -> list[np.ndarray]:
    return [session.step(frame, given.get(t)) for t, frame in enumerate(frames[start:], start=start)]


def test_resume_through_a_state_file_gives_the_same_masks(spec, clip, tmp_path):
    frames, masks = clip
    frames = frames[:8]
    given = {} if discovers_only(spec) else {0: only(masks[0], 1), 2: only(masks[2], 2)}
    straight = run(InferenceSession(build(spec)), frames, given)
    first = InferenceSession(build(spec))
    run(first, frames[:4], given)
    save_state(tmp_path / "state.npz", first.state_dict())
    resumed = InferenceSession(build(spec))
    resumed.load_state_dict(load_state(tmp_path / "state.npz"))
    continued = run(resumed, frames, given, start=4)
    for t, (a, b) in enumerate(zip(straight[4:], continued), start=4):
        assert np.array_equal(a, b), f"frame {t}"


def test_an_object_given_later_gets_its_id_and_is_followed(spec, clip):
    if not spec.one_shot:
        pytest.skip(f"{spec.name} discovers objects and takes no masks")
    frames, masks = clip
    session = InferenceSession(build(spec))
    out = run(session, frames[:2], {0: only(masks[0], 1)})
    assert 2 not in out[1]
    out = [session.step(frames[2], only(masks[2], 2))]
    assert np.array_equal(out[0] == 2, masks[2] == 2)
    for t in range(3, 6):  # followed: both objects stay the method's tracks (how well is each method's own test)
        session.step(frames[t])
        assert set(session.object_ids) == {1, 2}, f"frame {t}"


def test_a_removed_object_is_absent_from_later_masks(spec, clip):
    frames, masks = clip
    session = InferenceSession(build(spec))
    out = run(session, frames[:3], {} if discovers_only(spec) else {0: masks[0]})
    if discovers_only(spec):
        found = sorted(set(np.unique(out[-1]).tolist()) - {0})
        if not found:
            pytest.fail(f"{spec.name} finds no object in the test clip")
        removed = found[0]
    else:
        removed = 1
    session.remove_object(removed)
    for t in range(3, 6):
        assert removed not in session.step(frames[t]), f"frame {t}"
        assert removed not in session.object_ids


def test_a_video_leaves_the_shared_networks_unchanged(spec, clip):
    frames, masks = clip
    settings = {"online_steps": 1} if "online_steps" in spec.options else {}
    try:
        propagator = build(spec, **settings)
    except VidsegError as exc:  # a checkpoint of the method without online learning (HS2S on match's memory)
        if "no online learning" not in str(exc):
            raise
        propagator = build(spec)
    held = networks(propagator)
    if not held:
        pytest.skip(f"{spec.name} holds no network")
    before = {name: {k: v.clone() for k, v in module.state_dict().items()} for name, module in held.items()}
    run(InferenceSession(propagator), frames[:4], {} if discovers_only(spec) else {0: masks[0]})
    for name, module in held.items():
        after = module.state_dict()
        assert after.keys() == before[name].keys(), name
        assert all(torch.equal(before[name][k], v) for k, v in after.items()), name


def state_bytes(value: Any) -> int:
    """The bytes of the tensors and arrays in a (nested) state dict."""
    if isinstance(value, dict):
        return sum(state_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(state_bytes(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return value.nbytes if isinstance(value, np.ndarray) else 0


def test_memory_does_not_grow_with_the_video(spec, clip):
    frames, masks = clip
    session = InferenceSession(build(spec))
    given = {} if discovers_only(spec) else {0: masks[0]}
    run(session, frames[:6], given)
    after_6 = state_bytes(session.state_dict())
    run(session, frames[:12], given, start=6)
    assert state_bytes(session.state_dict()) == after_6 > 0

