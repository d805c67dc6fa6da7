"""The RVOS network: shapes, the slot order of the spatial recurrence, the ablation switches and the config."""

from __future__ import annotations

import pytest
import torch

from vidseg.models.rvos import RVOSConfig, build_model

TINY = {"backbone": "convnet-tiny", "slots": 4, "projections": (16, 16, 8, 8), "hidden": (16, 8, 8, 4)}


def tiny(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(RVOSConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("recurrence", ["st", "s", "t"])
@pytest.mark.parametrize("mode", ["one-shot", "zero-shot"])
def test_decode_shapes_and_state(mode, recurrence):
    model = tiny(mode=mode, recurrence=recurrence, objectness=True)
    frames = torch.rand(2, 3, 64, 96)
    masks = torch.rand(2, 4, 64, 96) if mode == "one-shot" else None
    with torch.no_grad():
        features = model.encode(frames)
        assert [tuple(f.shape[1:]) for f in features] == [(16, 2, 3), (16, 4, 6), (8, 8, 12), (8, 16, 24)]
        first = model.decode(features, None, masks, output_size=(64, 96))
        second = model.decode(features, first.temporal, masks, output_size=(64, 96))
    assert first.logits.shape == (2, 4, 64, 96) and first.objectness.shape == (2, 4)
    keys = {"h0", "h1", "h2", "h3"} | ({"c0", "c1", "c2", "c3"} if recurrence == "t" else set())
    assert set(second.temporal) == keys
    assert second.temporal["h3"].shape == (2, 4, 4, 16, 24)
    changed = (first.logits - second.logits).abs().max()
    assert (changed > 0) == (recurrence != "s")  # only a temporal path carries the previous frame


@pytest.mark.parametrize("recurrence", ["st", "s", "t"])
def test_running_fewer_slots_leaves_the_first_ones_unchanged(recurrence):
    model = tiny(mode="one-shot", recurrence=recurrence)
    frames, masks = torch.rand(1, 3, 64, 96), torch.rand(1, 4, 64, 96)
    with torch.no_grad():
        features = model.encode(frames)
        state = model.decode(features, None, masks).temporal
        every = model.decode(features, state, masks)
        two = model.decode(features, state, masks[:, :2], slots=2)
    torch.testing.assert_close(two.logits, every.logits[:, :2])


def test_spatial_recurrence_links_the_slots_and_temporal_only_does_not():
    frames, masks = torch.rand(1, 3, 64, 96), torch.rand(1, 4, 64, 96)
    for recurrence, linked in (("st", True), ("t", False)):
        model = tiny(mode="one-shot", recurrence=recurrence)
        with torch.no_grad():
            features = model.encode(frames)
            base = model.decode(features, None, masks).logits
            other = masks.clone()
            other[:, 0] = 1 - other[:, 0]  # change slot 0's input only
            moved = model.decode(features, None, other).logits
        assert (moved[:, 1:] - base[:, 1:]).abs().max() > 0 if linked else torch.equal(moved[:, 1:], base[:, 1:])


def test_parameter_groups_split_encoder_and_decoder():
    model = tiny()
    encoder, decoder = model.encoder_parameters(), model.decoder_parameters()
    assert len(encoder) + len(decoder) == len(list(model.parameters()))
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in decoder)


def test_paper_size_model():
    model = build_model(RVOSConfig(backbone="resnet101"))
    gates = [tuple(g.weight.shape[:2]) for g in model.gates]
    # projection [+ up-sampled hidden above] + mask + spatial h + temporal h -> 4 x hidden
    assert gates == [(512, 128 + 1 + 2 * 128), (256, 128 + 128 + 1 + 2 * 64), (128, 64 + 64 + 1 + 2 * 32),
                     (64, 32 + 32 + 1 + 2 * 16)]
    assert 48e6 < sum(p.numel() for p in model.parameters()) < 51e6


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "semi"}, "mode must be one of"),
        ({"recurrence": "x"}, "recurrence must be one of"),
        ({"slots": 0}, "slots must be in"),
        ({"hidden": [1, 2]}, "4 levels"),
        ({"colour": 1}, "unknown model option"),
    ],
)
def test_config_errors(values, message):
    with pytest.raises(ValueError, match=message):
        RVOSConfig.from_dict({**TINY, **values})


def test_masks_are_required_exactly_for_one_shot():
    features = tiny(mode="zero-shot").encode(torch.rand(1, 3, 64, 96))
    with pytest.raises(ValueError, match="zero-shot models take none"):
        tiny(mode="zero-shot").decode(features, None, torch.rand(1, 4, 64, 96))
    with pytest.raises(ValueError, match="one-shot models need previous_masks"):
        tiny(mode="one-shot").decode(features, None, None)
