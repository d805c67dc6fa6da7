"""The windowed memory read of ``match`` (blocked local attention) against a direct per-cell reading."""

import pytest
import torch
import torch.nn.functional as F

from vidseg.models.match_memory import MatchMemory, read_memory, read_memory_differentiable


def unit(*shape):
    return F.normalize(torch.randn(*shape), dim=0)


def direct_read(query, anchors, recent, top_k, temperature, radius, kept=None):
    """Each query cell against every anchor cell (those of the (h, w) bool masks ``kept``, one per anchor, if given)
    and the (2r+1)^2 cells around it in each recent frame (cells outside the frame are not candidates), one cell at
    a time."""
    _, height, width = query.shape
    out = torch.zeros(anchors[0][1].shape[0], height, width)
    for y in range(height):
        for x in range(width):
            q = query[:, y, x]
            sims = [torch.einsum("c,chw->hw", q, f).flatten() for f, _ in anchors]
            labels = [lab.flatten(1).T for _, lab in anchors]
            if kept is not None:
                sims = [sim[mask.flatten()] for sim, mask in zip(sims, kept)]
                labels = [lab[mask.flatten()] for lab, mask in zip(labels, kept)]
            for features, lab in recent:
                y0, y1 = max(0, y - radius), min(height, y + radius + 1)
                x0, x1 = max(0, x - radius), min(width, x + radius + 1)
                sims.append(torch.einsum("c,chw->hw", q, features[:, y0:y1, x0:x1]).flatten())
                labels.append(lab[:, y0:y1, x0:x1].flatten(1).T)
            sims, labels = torch.cat(sims), torch.cat(labels)
            top = sims.topk(min(top_k, len(sims)))
            out[:, y, x] = (torch.softmax(top.values / temperature, 0)[:, None] * labels[top.indices]).sum(0)
    return out


@pytest.mark.parametrize("height, width, recent_frames, objects",
                         [(6, 9, 3, 2), (11, 13, 0, 1), (9, 17, 5, 3), (12, 16, 4, 2), (12, 20, 2, 1)])
def test_windowed_read_equals_the_direct_one(height, width, recent_frames, objects):
    torch.manual_seed(height)
    anchors = [(unit(12, height, width), torch.rand(objects, height, width))]
    recent = [(unit(12, height, width), torch.rand(objects, height, width)) for _ in range(recent_frames)]
    # a query close to the last recent frame, so the windows hold the best matches
    query = F.normalize((recent[-1][0] if recent else anchors[0][0]) + 0.5 * torch.randn(12, height, width), dim=0)
    expected = direct_read(query, anchors, recent, 7, 0.1, 2)
    got = read_memory(query, anchors, recent, 7, 0.1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_ring_keeps_the_last_frames_and_a_rebuilt_memory_reads_the_same():
    torch.manual_seed(0)
    height, width = 10, 12
    anchor = (unit(8, height, width), torch.rand(1, height, width))
    memory = MatchMemory(size=4, radius=2)
    memory.add(*anchor, anchor=True)
    frames = [(unit(8, height, width), torch.rand(1, height, width)) for _ in range(11)]
    for features, labels in frames:
        memory.add(features, labels, anchor=False)
        memory.read(features, 9, 0.1)  # reads between adds: the label table is then updated slot by slot
    assert len(memory.recent) == 4 and memory.written == 11
    query = unit(8, height, width)
    expected = direct_read(query, [anchor], frames[-4:], 9, 0.1, 2)
    torch.testing.assert_close(memory.read(query, 9, 0.1), expected, atol=1e-5, rtol=1e-5)
    rebuilt = MatchMemory.rebuilt(4, 2, memory.anchors, memory.recent, memory.written)
    assert torch.equal(rebuilt.read(query, 9, 0.1), memory.read(query, 9, 0.1))


def test_relabel_changes_what_is_read():
    torch.manual_seed(1)
    memory = MatchMemory(size=2, radius=1)
    features, labels = unit(8, 5, 6), torch.rand(2, 5, 6)
    memory.add(features, labels, anchor=True)
    memory.add(unit(8, 5, 6), torch.rand(2, 5, 6), anchor=False)
    before = memory.read(features, 5, 0.1)
    memory.relabel([lab.flip(0) for lab in memory.entry_labels()])
    torch.testing.assert_close(memory.read(features, 5, 0.1), before.flip(0))


def test_memory_refuses_a_query_of_another_grid():
    memory = MatchMemory(size=2, radius=1)
    memory.add(unit(8, 5, 6), torch.rand(1, 5, 6), anchor=True)
    with pytest.raises(ValueError, match="cells"):
        memory.read(unit(8, 6, 6), 5, 0.1)


@pytest.mark.parametrize("recent_frames", [0, 3])
def test_differentiable_read_equals_the_direct_one_and_its_gradient_reaches_every_frame(recent_frames):
    torch.manual_seed(recent_frames)
    height, width, objects = 9, 11, 2
    anchors = [(unit(12, height, width).requires_grad_(), torch.rand(objects, height, width))]
    recent = [(unit(12, height, width).requires_grad_(), torch.rand(objects, height, width))
              for _ in range(recent_frames)]
    query = F.normalize((recent[-1][0] if recent else anchors[0][0]).detach() + 0.5 * torch.randn(12, height, width),
                        dim=0).requires_grad_()
    with torch.no_grad():
        expected = direct_read(query, anchors, recent, 7, 0.1, 2)
    got = read_memory_differentiable(query, anchors, recent, 7, 0.1, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (got * torch.rand_like(got)).sum().backward()
    for tensor in [query] + [features for features, _ in anchors + recent]:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_long_term_keeps_confident_frames_as_they_leave_the_recent_ones_and_reads_them_over_the_whole_frame():
    torch.manual_seed(0)
    height, width = 8, 10
    memory = MatchMemory(2, 1, long_term=2, long_term_every=2)
    anchor = (unit(6, height, width), torch.rand(1, height, width))
    memory.add(*anchor, anchor=True)
    frames = [(unit(6, height, width), torch.rand(1, height, width)) for _ in range(9)]
    marks = [True, False, True, True, True, False, True, True, True]
    for (features, labels), mark in zip(frames[:7], marks):
        memory.add(features, labels, anchor=False, confident=mark)
    # frames 0..4 have left the 2 recent ones: 1 was unsure, 0 and 3 came too soon after the last kept one
    assert [f for f, _ in memory.long_term] == [frames[2][0], frames[4][0]]
    saved = MatchMemory.rebuilt(2, 1, memory.anchors, memory.recent, memory.written, memory.long_term, 2, 2,
                                memory.since_long_term, memory.confident)
    for copy in (memory, saved):
        for (features, labels), mark in zip(frames[7:], marks[7:]):
            copy.add(features, labels, anchor=False, confident=mark)
        assert [f for f, _ in copy.long_term] == [frames[4][0], frames[6][0]]  # the budget: the oldest left
        assert [f for f, _ in copy.recent] == [frames[7][0], frames[8][0]]
    query = F.normalize(frames[8][0] + 0.5 * torch.randn(6, height, width), dim=0)
    expected = direct_read(query, [anchor, frames[4], frames[6]], frames[7:], 7, 0.1, 1)
    torch.testing.assert_close(memory.read(query, 7, 0.1), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(saved.read(query, 7, 0.1), expected, atol=1e-5, rtol=1e-5)
    order = [anchor, frames[4], frames[6], frames[7], frames[8]]  # anchors, long-term, recent
    assert [id(labels) for labels in memory.entry_labels()] == [id(labels) for _, labels in order]


def test_background_stride_keeps_objects_surroundings_and_look_alikes_and_thins_the_rest():
    torch.manual_seed(3)
    height, width, stride = 14, 20, 2
    labels = torch.rand(1, height, width) * 0.005  # background: label below NEAR_LABEL
    labels[0, 1:4, 1:5] = 1.0  # an object in a corner: cells farther than NEAR_MARGIN (4) from it are far background
    features = unit(12, height, width)
    lookalikes = [(9, 15), (11, 3), (13, 17)]  # far, off the stride grid, and like an object cell
    for y, x in lookalikes:  # near copies (exact ones would tie with the original in the top k)
        features[:, y, x] = F.normalize(features[:, 2, 3] + 0.05 * torch.randn(12), dim=0)
    anchor = (features, labels)
    recent = [(unit(12, height, width), torch.rand(1, height, width)) for _ in range(2)]
    memory = MatchMemory(size=2, radius=2, background_stride=stride)
    memory.add(*anchor, anchor=True)
    for f, lab in recent:
        memory.add(f, lab, anchor=False)
    kept = torch.zeros(height * width, dtype=torch.bool)
    kept[memory._kept_cells()[0]] = True
    kept = kept.view(height, width)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    near, on_grid = (ys <= 3 + 4) & (xs <= 4 + 4), (ys % stride == 0) & (xs % stride == 0)
    assert kept[near | on_grid].all() and all(kept[y, x] for y, x in lookalikes)
    far_off_grid = ~near & ~on_grid
    assert 0.2 < kept[far_off_grid].float().mean() < 0.3  # the quarter most like the object, no more
    query = unit(12, height, width)
    expected = direct_read(query, [anchor], recent, 7, 0.1, 2, kept=[kept])
    torch.testing.assert_close(memory.read(query, 7, 0.1), expected, atol=1e-5, rtol=1e-5)
    # the kept cells follow from the entries, so a memory rebuilt from them (a resumed session) reads the same
    rebuilt = MatchMemory.rebuilt(2, 2, memory.anchors, memory.recent, memory.written, background_stride=stride)
    assert torch.equal(rebuilt.read(query, 7, 0.1), memory.read(query, 7, 0.1))
    every = MatchMemory.rebuilt(2, 2, memory.anchors, memory.recent, memory.written)
    torch.testing.assert_close(every.read(query, 7, 0.1), direct_read(query, [anchor], recent, 7, 0.1, 2))
