"""Procedural synthetic video-object-segmentation benchmark.

Deterministic, streaming clips of textured shapes over a textured background, with the difficulties of
real VOS data switched on or off one by one:

* 1..N labelled objects (ids 1..N), each with a shape *category* (``ellipse``, ``star``, ``blob``, ...)
  so that YouTube-VOS seen/unseen splits mean something;
* look-alike **distractors**: unlabelled copies (same outline and texture) of a labelled object;
* **full occlusions**: an object goes behind an occluder or leaves the frame for 1..``max_hidden`` frames
  and comes back (the mask holds only the visible part; a fully hidden id is absent);
* objects that **enter late** (``late_entry``, used by the YouTube-VOS writer);
* **scale** and **shape** change (breathing scale, anisotropic stretch, non-rigid wobble), rotation;
* **camera motion** (pan, shake, small rotation and zoom applied to background and objects alike),
  **motion blur** along each layer's image-space velocity, slow lighting changes.

A clip is a compact *plan* (a background texture, one small texture per object and a handful of
trajectory coefficients); every frame is rendered from the plan on demand, so clips of any length stream
in constant memory and any frame can be rendered at random (:meth:`SynthClip.render`).

Writers produce the DAVIS layout (:func:`write_davis`), the YouTube-VOS layout with sparse labels and
``meta.json`` (:func:`write_youtube_vos`), an ``.mp4`` with its first-frame mask and ground truth
(:func:`write_video`), and a small demo clip (:func:`make_demo_clip`). Each output folder holds a
``vidseg_synth.json`` describing what was generated (configs, seeds, objects, occlusion runs measured
on the written masks); only empty folders and previous synth outputs are written into.

Modules: ``config`` (settings, seeds), ``textures``/``shapes`` (appearance), ``layers`` (the plan's
state), ``backdrop`` (background, camera, light), ``layout``/``occlusions`` (planning), ``raster``,
``clip`` (:class:`SynthClip`), ``folders`` (markers, folder claims), ``writers`` and ``demo``.

numpy + OpenCV only (no torch).
"""

from vidseg.data.synth.clip import SynthClip, generate_clip
from vidseg.data.synth.config import (
    MAX_DISTRACTORS,
    MAX_OBJECTS,
    MAX_SIZE,
    MIN_SIZE,
    SHAPES,
    SynthConfig,
    derive_seed,
    resolution_name,
)
from vidseg.data.synth.demo import DemoClip, make_demo_clip
from vidseg.data.synth.folders import GENERATOR, MARKER_NAME, check_output_folder
from vidseg.data.synth.layers import OcclusionEvent, SynthObject
from vidseg.data.synth.shapes import make_outline
from vidseg.data.synth.textures import TEXTURES, make_texture
from vidseg.data.synth.writers import (
    SynthOutput,
    SynthVideo,
    write_davis,
    write_video,
    write_videos,
    write_youtube_vos,
)

__all__ = [
    "GENERATOR",
    "MARKER_NAME",
    "MAX_DISTRACTORS",
    "MAX_OBJECTS",
    "MAX_SIZE",
    "MIN_SIZE",
    "SHAPES",
    "TEXTURES",
    "DemoClip",
    "OcclusionEvent",
    "SynthClip",
    "SynthConfig",
    "SynthObject",
    "SynthOutput",
    "SynthVideo",
    "check_output_folder",
    "derive_seed",
    "generate_clip",
    "make_demo_clip",
    "make_outline",
    "make_texture",
    "resolution_name",
    "write_davis",
    "write_video",
    "write_videos",
    "write_youtube_vos",
]
