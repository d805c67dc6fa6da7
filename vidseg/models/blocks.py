"""Building blocks shared by the S2S / S2S++ / HS2S networks.

All modules hold weights only; recurrent state is passed in and returned by the caller, so one
module can run many videos (and batches of different sizes) without being reset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (B, hidden, H, W)

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def _activation(name: str, what: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"{what} must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell: one conv over ``[x, h]`` gives the four gates.

    i, f, o = sigmoid(.); g = candidate_activation(.) (sigmoid in the HS2S code, tanh classically);
    c' = f * c + i * g; h' = o * state_activation(c') (ReLU in S2S/HS2S, tanh classically).
    ``forward(x, state=None) -> (h, (h, c))``; a None state is zeros shaped from ``x`` at run time,
    so any input size works and the hidden state has ``x``'s spatial size.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        state_activation: str = "relu",
        candidate_activation: str = "sigmoid",
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.state_act = _activation(state_activation, "state_activation")
        self.candidate_act = _activation(candidate_activation, "candidate_activation")
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)

    def zero_state(self, x: Tensor) -> LSTMState:
        shape = (x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
        zeros = x.new_zeros(shape)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        h, c = self.zero_state(x) if state is None else state
        if h.shape[-2:] != x.shape[-2:] or h.shape[0] != x.shape[0]:
            raise ValueError(f"ConvLSTM state {tuple(h.shape)} does not match input {tuple(x.shape)}")
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.candidate_act(g)
        h = torch.sigmoid(o) * self.state_act(c)
        return h, (h, c)


class GlobalConvBlock(nn.Module):
    """Global Convolution (Peng et al. 2017): (k x 1)(1 x k) + (1 x k)(k x 1), summed; no nonlinearity.

    A cheap k x k receptive field (HS2S: k = 7, 256 inner channels). Keeps the spatial size.
    """

    def __init__(self, in_ch: int, out_ch: int, k: int = 7, inner: int = 256):
        super().__init__()
        if k % 2 != 1:
            raise ValueError(f"k must be odd, got {k}")
        p = k // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_ch, inner, (k, 1), padding=(p, 0)), nn.Conv2d(inner, out_ch, (1, k), padding=(0, p))
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_ch, inner, (1, k), padding=(0, p)), nn.Conv2d(inner, out_ch, (k, 1), padding=(p, 0))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.left(x) + self.right(x)


def cosine_similarity_map(
    query: Tensor, key: Tensor, key_mask: Tensor | None = None, chunk: int = 4096
) -> Tensor:
    """Per-pixel cosine-similarity matching features (the HS2S_sim merge).

    query (B, C, Hq, Wq), key (B, C, Hk, Wk), optional key_mask (B, 1, Hm, Wm) in [0, 1] at any size
    (area/bilinear-resized to the key's size, then foreground = mask > 0.5).
    For each query pixel the cosine similarity to every key pixel is computed; returns
      * with key_mask: (B, 4, Hq, Wq) = [max over fg keys, mean over fg keys, max over bg keys, mean over bg keys]
      * without:      (B, 2, Hq, Wq) = [max over all keys, mean over all keys]
    Values lie in [-1, 1]; a statistic over an empty key set (no fg or no bg pixel) is 0.
    Memory: the (Hq*Wq) x (Hk*Wk) similarity is built ``chunk`` query pixels at a time, so peak extra
    memory is about B * chunk * Hk * Wk floats.
    """
    if query.dim() != 4 or key.dim() != 4 or query.shape[:2] != key.shape[:2]:
        raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} need equal (B, C)")
    b, _, hq, wq = query.shape
    q = F.normalize(query.flatten(2), dim=1)  # (B, C, Nq)
    k = F.normalize(key.flatten(2), dim=1)  # (B, C, Nk)
    if key_mask is None:
        groups = [torch.ones(b, k.shape[2], dtype=torch.bool, device=k.device)]
    else:
        m = F.interpolate(key_mask.float(), size=key.shape[-2:], mode="bilinear", align_corners=False)
        fg = m.flatten(1) > 0.5  # (B, Nk)
        groups = [fg, ~fg]
    outputs: list[Tensor] = []
    for start in range(0, q.shape[2], chunk):
        sim = torch.einsum("bcq,bck->bqk", q[:, :, start : start + chunk], k)  # (B, nq, Nk)
        stats: list[Tensor] = []
        for sel in groups:
            sel_ = sel[:, None, :]
            count = sel_.sum(-1)  # (B, 1)
            maxv = sim.masked_fill(~sel_, float("-inf")).amax(-1)
            maxv = torch.where(count > 0, maxv, torch.zeros_like(maxv))
            meanv = (sim * sel_).sum(-1) / count.clamp(min=1)
            stats += [maxv, meanv]
        outputs.append(torch.stack(stats, dim=1))  # (B, S, nq)
    return torch.cat(outputs, dim=2).reshape(b, -1, hq, wq)


class CosineMatcher(nn.Module):
    """HS2S_sim merge: ``conv1x1([query, cosine_similarity_map(query, key, key_mask)]) -> out_channels``.

    A drop-in for a GlobalConvBlock merge of (h_t, reference features); the similarity itself has no weights.
    """

    def __init__(self, query_channels: int, out_channels: int, masked: bool = True, chunk: int = 4096):
        super().__init__()
        self.masked = masked
        self.chunk = chunk
        self.proj = nn.Conv2d(query_channels + (4 if masked else 2), out_channels, 1)

    def forward(self, query: Tensor, key: Tensor, key_mask: Tensor | None = None) -> Tensor:
        if self.masked and key_mask is None:
            raise ValueError("this CosineMatcher was built with masked=True and needs key_mask")
        sims = cosine_similarity_map(query, key, key_mask if self.masked else None, self.chunk)
        return self.proj(torch.cat([query, sims], dim=1))


class UpsampleDecoder(nn.Module):
    """S2S/HS2S decoder: ``len(widths)`` stages of (bilinear up-sampling, skip merge, k x k conv + ReLU).

    Skips are given coarsest first: ``skips[i]`` is merged right after stage i's up-sampling, and stage i
    up-samples exactly to ``skips[i]``'s size (so inputs whose size is not a multiple of 32 work). A skip is
    mapped by a 1x1 conv and added (``merge="add"``) or concatenated (``merge="concat"``). Stages without a
    skip up-sample x2, the last one to ``output_size`` when given and the decoder has ``full_stages`` stages; a
    shorter decoder ends at a coarser stride and its logits are up-sampled bilinearly to ``output_size`` (its border
    logits stay at that stride: the loss compares them with the border classes at their size). For a backbone's
    ``[f2, f4, f8, f16, f32]`` with ``h`` at 1/32, pass ``skips=[f16, f8, f4, f2]``.

    ``skip_memory=True`` (S2S++/HS2S) runs a ConvLSTM over ``skips[0]`` (HS2S: the 1/16 skip, 5x5 kernel);
    its state is the caller's: ``forward(h, skips, skip_state) -> (logits, new_skip_state, border_logits)``
    where ``new_skip_state`` is None without skip memory and ``border_logits`` is None unless
    ``n_border_classes > 0`` (HS2S: 42 distance classes). ``logits`` is (B, 1, H, W), pre-sigmoid.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: Sequence[int] = (),
        widths: Sequence[int] = (512, 256, 128, 64, 64),
        kernel_size: int = 5,
        skip_memory: bool = False,
        skip_memory_kernel: int = 5,
        skip_memory_channels: int | None = None,
        merge: str = "add",
        n_border_classes: int = 0,
        full_stages: int = 5,
    ):
        super().__init__()
        if len(skip_channels) > len(widths):
            raise ValueError(f"{len(skip_channels)} skips but only {len(widths)} stages")
        if merge not in ("add", "concat"):
            raise ValueError(f"merge must be 'add' or 'concat', got {merge!r}")
        if skip_memory and not skip_channels:
            raise ValueError("skip_memory needs at least one skip connection")
        self.merge = merge
        self.n_stages = len(widths)
        self.full_resolution = self.n_stages >= full_stages
        skip_channels = list(skip_channels)
        self.skip_lstm: ConvLSTMCell | None = None
        if skip_memory:
            mem = skip_memory_channels or skip_channels[0]
            self.skip_lstm = ConvLSTMCell(skip_channels[0], mem, skip_memory_kernel)
            skip_channels[0] = mem  # the 1x1 merge sees the LSTM's hidden state
        self.skip_convs = nn.ModuleList()
        self.convs = nn.ModuleList()
        prev = in_channels
        for i, width in enumerate(widths):
            conv_in = prev
            if i < len(skip_channels):
                # add: map the skip to the running width; concat: to its own width, then concatenate.
                self.skip_convs.append(nn.Conv2d(skip_channels[i], prev, 1))
                if merge == "concat":
                    conv_in = 2 * prev
            self.convs.append(nn.Conv2d(conv_in, width, kernel_size, padding=kernel_size // 2))
            prev = width
        self.head = nn.Conv2d(prev, 1, 1)
        self.border_head = nn.Conv2d(prev, n_border_classes, 1) if n_border_classes > 0 else None

    def forward(
        self,
        h: Tensor,
        skips: Sequence[Tensor] = (),
        skip_state: LSTMState | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> tuple[Tensor, LSTMState | None, Tensor | None]:
        if len(skips) != len(self.skip_convs):
            raise ValueError(f"decoder built for {len(self.skip_convs)} skips, got {len(skips)}")
        skips = list(skips)
        new_state: LSTMState | None = None
        if self.skip_lstm is not None:
            skips[0], new_state = self.skip_lstm(skips[0], skip_state)
        x = h
        for i, conv in enumerate(self.convs):
            if i < len(skips):
                size = tuple(skips[i].shape[-2:])
            elif i == self.n_stages - 1 and output_size is not None and self.full_resolution:
                size = tuple(output_size)
            else:
                size = (x.shape[-2] * 2, x.shape[-1] * 2)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            if i < len(skips):
                s = self.skip_convs[i](skips[i])
                x = x + s if self.merge == "add" else torch.cat([x, s], dim=1)
            x = torch.relu(conv(x))
        logits = self.head(x)
        border = self.border_head(x) if self.border_head is not None else None
        if output_size is not None and tuple(x.shape[-2:]) != tuple(output_size):
            logits = F.interpolate(logits, size=output_size, mode="bilinear", align_corners=False)
        return logits, new_state, border
