"""Joint, clip-consistent augmentation of frames and masks.

Frames and masks go through :mod:`torchvision.transforms.v2.functional` as :class:`tv_tensors.Video`
and :class:`tv_tensors.Mask`, so every geometric operation is applied to both with the same parameters
(bilinear + antialias for frames, nearest for masks) and the masks stay aligned with the pixels.

The random parameters are drawn once per clip from a caller-supplied :class:`torch.Generator` (never
from the global RNG), so a clip is reproducible from its seed. Order of operations:

1. scale/crop: a random crop (area fraction ``scale``, aspect ratio ``ratio`` times the target aspect)
   resized to the target ``size`` (``RandomResizedCrop``-like); without it the whole frame is resized;
2. horizontal flip with probability ``hflip``;
3. random affine (rotation, translation, shear, scale) about the centre; optionally a small extra
   per-frame affine (``frame_jitter``) on top of the clip's one, to imitate camera/object motion;
4. colour jitter (brightness, contrast, saturation, hue) on the frames only, in a random order.

Pixels that an affine brings in from outside the image are black in the frames and void
(:data:`~vidseg.io.masks.VOID_ID`) in the masks by default (``mask_fill``), so that no loss is computed
where the content is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vidseg.constants import IMAGENET_MEAN, IMAGENET_STD, VOID_ID


@dataclass(frozen=True)
class AffineRange:
    """Ranges of a random affine transform: each parameter is drawn uniformly.

    ``degrees``: rotation in [-degrees, degrees]; ``translate``: shift in [-t, t] times the width/height;
    ``shear``: x-shear in [-shear, shear] degrees (y-shear likewise when ``shear_y``); ``scale``: zoom range.
    """

    degrees: float = 0.0
    translate: float = 0.0
    shear: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shear_y: bool = False

    def is_identity(self) -> bool:
        return self.degrees == 0 and self.translate == 0 and self.shear == 0 and tuple(self.scale) == (1.0, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """What :class:`ClipAugment` does; ``AugmentConfig.none()`` only resizes.

    Attributes:
        crop: random scale/crop to the target size (else the whole frame is resized to it).
        scale: range of the crop's area as a fraction of the frame.
        ratio: range of the crop's aspect ratio relative to the target's (log-uniform).
        hflip: probability of a horizontal flip.
        affine: the clip's random affine (the same for every frame).
        frame_jitter: an extra small affine drawn for every frame separately (``None`` for none).
        brightness, contrast, saturation: colour jitter factors drawn in [1 - x, 1 + x].
        hue: hue shift drawn in [-hue, hue] turns (at most 0.5), done as a chroma rotation in YIQ space.
        mask_fill: mask value of pixels brought in from outside the image (``VOID_ID`` or 0).
    """

    crop: bool = True
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (0.85, 1.0 / 0.85)
    hflip: float = 0.5
    affine: AffineRange = field(default_factory=lambda: AffineRange(degrees=10.0, translate=0.05, shear=5.0, scale=(0.95, 1.05)))
    frame_jitter: AffineRange | None = None
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    mask_fill: int = VOID_ID

    @classmethod
    def none(cls) -> AugmentConfig:
        """Resize only: no crop, flip, affine or colour change."""
        return cls(crop=False, hflip=0.0, affine=AffineRange(), frame_jitter=None, brightness=0.0, contrast=0.0,
                   saturation=0.0, hue=0.0)

    def geometric_only(self) -> AugmentConfig:
        return replace(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


class AffineParams(NamedTuple):
    angle: float
    translate: tuple[float, float]  # pixels at the target size
    scale: float
    shear: tuple[float, float]

    @staticmethod
    def identity() -> AffineParams:
        return AffineParams(0.0, (0.0, 0.0), 1.0, (0.0, 0.0))

    def is_identity(self) -> bool:
        return self == AffineParams.identity()

    def compose(self, other: AffineParams) -> AffineParams:
        """Parameters of this transform plus a small ``other`` one (angles/shifts/shears add, scales multiply)."""
        return AffineParams(
            self.angle + other.angle,
            (self.translate[0] + other.translate[0], self.translate[1] + other.translate[1]),
            self.scale * other.scale,
            (self.shear[0] + other.shear[0], self.shear[1] + other.shear[1]),
        )


@dataclass(frozen=True)
class ClipParams:
    """Every random choice made for one clip (see :meth:`ClipAugment.sample`)."""

    input_size: tuple[int, int]
    crop: tuple[int, int, int, int] | None  # top, left, height, width in input pixels; None = whole frame
    flip: bool
    frame_affine: tuple[AffineParams, ...]  # one per frame (the clip's affine composed with the jitter)
    colour: tuple[tuple[str, float], ...]  # (operation, factor) in the order applied

    def without_geometry(self) -> ClipParams:
        return replace(self, crop=None, flip=False, frame_affine=tuple(AffineParams.identity() for _ in self.frame_affine))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    if high <= low:
        return float(low)
    return float(low + (high - low) * torch.rand((), generator=generator).item())


def _sample_affine(r: AffineRange, size: tuple[int, int], generator: torch.Generator) -> AffineParams:
    if r.is_identity():
        return AffineParams.identity()
    h, w = size
    angle = _uniform(generator, -r.degrees, r.degrees)
    tx = _uniform(generator, -r.translate, r.translate) * w
    ty = _uniform(generator, -r.translate, r.translate) * h
    scale = _uniform(generator, r.scale[0], r.scale[1])
    sx = _uniform(generator, -r.shear, r.shear)
    sy = _uniform(generator, -r.shear, r.shear) if r.shear_y else 0.0
    return AffineParams(angle, (tx, ty), scale, (sx, sy))


def _sample_crop(
    input_size: tuple[int, int], size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box whose aspect is the target's times a ratio drawn log-uniformly."""
    H, W = input_size
    target_aspect = size[1] / size[0]
    area = H * W
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        a = area * _uniform(generator, scale[0], scale[1])
        aspect = target_aspect * math.exp(_uniform(generator, *log_ratio))
        w = int(round(math.sqrt(a * aspect)))
        h = int(round(math.sqrt(a / aspect)))
        if 0 < w <= W and 0 < h <= H:
            top = int(torch.randint(0, H - h + 1, (), generator=generator))
            left = int(torch.randint(0, W - w + 1, (), generator=generator))
            return top, left, h, w
    # Fallback: the largest centred box with the target aspect.
    if W / H > target_aspect:
        h, w = H, max(1, min(W, int(round(H * target_aspect))))
    else:
        h, w = max(1, min(H, int(round(W / target_aspect)))), W
    return (H - h) // 2, (W - w) // 2, h, w


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width), got {size}")
    return size


class ClipAugment:
    """Clip-consistent joint augmentation to a fixed output ``size`` (height, width).

    ``augment(frames, masks, generator)`` takes frames ``(T, 3, H, W)`` (uint8 0..255 or float 0..1)
    and id masks ``(T, H, W)`` (uint8/int, 255 = void) and returns float32 frames in [0, 1] of shape
    ``(T, 3, h, w)`` and uint8 masks ``(T, h, w)``. :meth:`sample` and :meth:`apply` split that in
    two, so that a caller can inspect the parameters (e.g. check an object survived the crop on the
    first mask with :meth:`apply_masks`) before transforming the whole clip.
    """

    def __init__(self, size, config: AugmentConfig | None = None):
        self.size = _check_size(size)
        self.config = config if config is not None else AugmentConfig()
        c = self.config
        if not 0.0 <= c.hue <= 0.5:
            raise ValueError("hue must lie in [0, 0.5]")
        if not 0.0 <= c.hflip <= 1.0:
            raise ValueError("hflip is a probability")
        if not (0 < c.scale[0] <= c.scale[1] <= 1.0):
            raise ValueError("crop scale must satisfy 0 < min <= max <= 1")

    def __repr__(self) -> str:
        return f"ClipAugment(size={self.size}, config={self.config})"

    # ------------------------------------------------------------------ parameters
    def sample(self, num_frames: int, input_size: tuple[int, int], generator: torch.Generator) -> ClipParams:
        """Draw every random parameter of a clip of ``num_frames`` frames of ``input_size`` (H, W)."""
        c = self.config
        crop = _sample_crop(tuple(input_size), self.size, c.scale, c.ratio, generator) if c.crop else None
        flip = bool(c.hflip > 0 and torch.rand((), generator=generator).item() < c.hflip)
        base = _sample_affine(c.affine, self.size, generator)
        per_frame = []
        for _ in range(num_frames):
            jitter = _sample_affine(c.frame_jitter, self.size, generator) if c.frame_jitter is not None else None
            per_frame.append(base.compose(jitter) if jitter is not None else base)
        colour = []
        for name, amount in (("brightness", c.brightness), ("contrast", c.contrast), ("saturation", c.saturation)):
            if amount > 0:
                colour.append((name, _uniform(generator, max(0.0, 1 - amount), 1 + amount)))
        if c.hue > 0:
            colour.append(("hue", _uniform(generator, -c.hue, c.hue)))
        if len(colour) > 1:
            order = torch.randperm(len(colour), generator=generator).tolist()
            colour = [colour[i] for i in order]
        return ClipParams(tuple(input_size), crop, flip, tuple(per_frame), tuple(colour))

    # ------------------------------------------------------------------ application
    def _geometry(self, x: torch.Tensor, params: ClipParams, frame_ids, is_mask: bool) -> torch.Tensor:
        interp = InterpolationMode.NEAREST if is_mask else InterpolationMode.BILINEAR
        if params.crop is not None:
            top, left, h, w = params.crop
            x = F.resized_crop(x, top, left, h, w, list(self.size), interpolation=interp, antialias=not is_mask)
        elif tuple(x.shape[-2:]) != self.size:
            x = F.resize(x, list(self.size), interpolation=interp, antialias=not is_mask)
        if params.flip:
            x = F.horizontal_flip(x)
        affines = [params.frame_affine[i] for i in frame_ids]
        if all(a.is_identity() for a in affines):
            return x
        fill = [float(self.config.mask_fill)] if is_mask else [0.0]
        wrap = tv_tensors.Mask if is_mask else tv_tensors.Video
        if all(a == affines[0] for a in affines):
            a = affines[0]
            return F.affine(x, angle=a.angle, translate=list(a.translate), scale=a.scale, shear=list(a.shear),
                            interpolation=interp, fill=fill)
        out = []
        for t, a in enumerate(affines):
            frame = wrap(x[t : t + 1])
            out.append(F.affine(frame, angle=a.angle, translate=list(a.translate), scale=a.scale, shear=list(a.shear),
                                interpolation=interp, fill=fill))
        return wrap(torch.cat([o.as_subclass(torch.Tensor) for o in out]))

    def apply_masks(self, masks: torch.Tensor, params: ClipParams, frame_ids: list[int] | None = None) -> torch.Tensor:
        """Transform id masks ``(N, H, W)`` that are frames ``frame_ids`` (default 0..N-1) of the clip."""
        masks = torch.as_tensor(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be (T, H, W), got shape {tuple(masks.shape)}")
        if masks.dtype != torch.uint8:
            masks = masks.to(torch.uint8)
        frame_ids = list(range(masks.shape[0])) if frame_ids is None else list(frame_ids)
        out = self._geometry(tv_tensors.Mask(masks), params, frame_ids, is_mask=True)
        return out.as_subclass(torch.Tensor)

    def apply_frames(self, frames: torch.Tensor, params: ClipParams, frame_ids: list[int] | None = None) -> torch.Tensor:
        """Transform frames ``(N, 3, H, W)``; returns float32 in [0, 1]."""
        frames = torch.as_tensor(frames)
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W), got shape {tuple(frames.shape)}")
        frame_ids = list(range(frames.shape[0])) if frame_ids is None else list(frame_ids)
        # Crop/resize first, in the input dtype (uint8 resizing is exact enough and cheaper), then float.
        video = tv_tensors.Video(frames)
        if params.crop is not None:
            video = tv_tensors.Video(F.resized_crop(video, *params.crop, list(self.size), antialias=True))
        elif tuple(frames.shape[-2:]) != self.size:
            video = tv_tensors.Video(F.resize(video, list(self.size), antialias=True))
        params = replace(params, crop=None)
        video = tv_tensors.Video(F.to_dtype(video, torch.float32, scale=True))
        video = self._geometry(video, params, frame_ids, is_mask=False)
        for name, value in params.colour:
            if name == "brightness":
                video = F.adjust_brightness(video, value)
            elif name == "contrast":
                video = F.adjust_contrast(video, value)
            elif name == "saturation":
                video = F.adjust_saturation(video, value)
            elif name == "hue":
                video = tv_tensors.Video(_rotate_hue(video.as_subclass(torch.Tensor), value))
        return video.as_subclass(torch.Tensor).clamp_(0.0, 1.0)

    def apply(self, frames: torch.Tensor, masks: torch.Tensor, params: ClipParams) -> tuple[torch.Tensor, torch.Tensor]:
        if frames.shape[0] != masks.shape[0] or tuple(frames.shape[-2:]) != tuple(masks.shape[-2:]):
            raise ValueError(f"frames {tuple(frames.shape)} and masks {tuple(masks.shape)} do not match")
        return self.apply_frames(frames, params), self.apply_masks(masks, params)

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
        params = self.sample(frames.shape[0], tuple(frames.shape[-2:]), generator)
        return self.apply(frames, masks, params)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _rotate_hue(frames: torch.Tensor, hue: float) -> torch.Tensor:
    """Shift the hue of float RGB frames ``(..., 3, H, W)`` by ``hue`` turns (a rotation of the
    chroma plane in YIQ space: one 3x3 matrix, much cheaper than torchvision's HSV round trip and
    the same up to the HSV/YIQ difference in what "hue" means)."""
    if hue == 0:
        return frames
    c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    matrix = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(frames.dtype)
    return torch.einsum("ij,...jhw->...ihw", matrix, frames)


def resize_clip(frames: torch.Tensor, masks: torch.Tensor | None, size) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize frames (bilinear, antialias; float [0, 1] out) and masks (nearest) to ``size`` = (h, w)."""
    aug = ClipAugment(size, AugmentConfig.none())
    params = aug.sample(frames.shape[0], tuple(frames.shape[-2:]), torch.Generator())
    out = aug.apply_frames(frames, params)
    return out, (aug.apply_masks(masks, params) if masks is not None else None)


def normalize(frames: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """ImageNet normalisation of float frames ``(..., 3, H, W)`` in [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames - mean_t) / std_t


class AffinePairs(NamedTuple):
    """``n`` training pairs (x0, y0) -> (x1, y1) made from one annotated frame."""

    x0: torch.Tensor  # (n, 3, h, w) float in [0, 1]
    y0: torch.Tensor  # (n, h, w) uint8 ids (mask_fill where unknown)
    x1: torch.Tensor
    y1: torch.Tensor


OL_BASE = AugmentConfig(
    crop=True, scale=(0.7, 1.0), hflip=0.5,
    affine=AffineRange(degrees=10.0, translate=0.05, shear=5.0, scale=(0.9, 1.1)),
    frame_jitter=None, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0,
)
OL_MOTION = AffineRange(degrees=5.0, translate=0.05, shear=2.0, scale=(0.95, 1.05))


def first_frame_affine_pairs(
    frame: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    generator: torch.Generator,
    size=None,
    base: AugmentConfig = OL_BASE,
    motion: AffineRange = OL_MOTION,
    min_pixels: int = 1,
    max_tries: int = 10,
) -> AffinePairs:
    """Pairs for S2S online learning: random affine versions of one frame and its mask.

    Each pair draws one random augmentation of the frame (crop, flip, affine, colour from ``base``)
    as (x0, y0) and the same augmentation followed by a small extra affine ``motion`` as (x1, y1),
    imitating the motion between two consecutive frames. ``frame``: ``(3, H, W)`` uint8 or float in
    [0, 1]; ``mask``: ``(H, W)`` ids. ``size`` defaults to the frame's size. Draws whose y0 loses
    every object pixel (fewer than ``min_pixels``) are redrawn up to ``max_tries`` times, then the
    geometric part is dropped.
    """
    frame = torch.as_tensor(frame)
    mask = torch.as_tensor(mask)
    if frame.ndim != 3 or frame.shape[0] != 3:
        raise ValueError(f"frame must be (3, H, W), got shape {tuple(frame.shape)}")
    if mask.shape != frame.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match frame {tuple(frame.shape)}")
    if n < 1:
        raise ValueError("n must be at least 1")
    size = _check_size(size) if size is not None else tuple(frame.shape[-2:])
    aug = ClipAugment(size, replace(base, frame_jitter=None))
    frames = frame.unsqueeze(0).expand(2, -1, -1, -1)
    masks = mask.to(torch.uint8).unsqueeze(0).expand(2, -1, -1)
    has_object = bool(((mask > 0) & (mask != VOID_ID)).any())
    x0s, y0s, x1s, y1s = [], [], [], []
    for _ in range(n):
        for attempt in range(max_tries + 1):
            params = aug.sample(2, tuple(frame.shape[-2:]), generator)
            step = _sample_affine(motion, size, generator)
            if attempt == max_tries:
                params = params.without_geometry()
            params = replace(params, frame_affine=(params.frame_affine[0], params.frame_affine[0].compose(step)))
            y = aug.apply_masks(masks, params)
            if not has_object or _object_pixels(y[0]) >= min_pixels or attempt == max_tries:
                break
        x = aug.apply_frames(frames, params)
        x0s.append(x[0])
        x1s.append(x[1])
        y0s.append(y[0])
        y1s.append(y[1])
    return AffinePairs(torch.stack(x0s), torch.stack(y0s), torch.stack(x1s), torch.stack(y1s))


def _object_pixels(mask: torch.Tensor) -> int:
    return int(((mask > 0) & (mask != VOID_ID)).sum())
