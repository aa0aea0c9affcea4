"""The built-in demo: a small synthetic action dataset rendered as real videos.

Clips are written as ``<root>/<Class>/v_<Class>_gNN_cNN.avi`` (MPEG-4 Part 2 in
AVI, like UCF101's XviD clips). Each class is a moving shape or texture. All
clips of one group share a scene (background, object colour, size, noise,
position), the way UCF101's groups share a source video, so a split that lets
a group cross from train to test rewards memorising scenes. Backgrounds and
colours come from pools shared by all classes, so only the shape and its
motion name the class.

Three pairs of classes differ only in temporal order: ``Grow``/``Shrink``
(size), ``RotateClockwise``/``RotateAnticlockwise`` (orientation) and
``Brighten``/``Darken`` (brightness). Every frame of one class of a pair could
come from the other, so a model that averages per-frame scores cannot separate
them, while a globally pooled per-frame feature still sees each frame's size,
orientation or brightness for a head that models order to use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import DEMO_CLASSES
from .settings import with_defaults
from .video import write_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scene:
    """What every clip of one group shares."""

    bg_a: np.ndarray  # RGB, float32
    bg_b: np.ndarray
    bg_angle: float
    texture: float  # amplitude of the background's sinusoidal texture
    texture_freq: float
    colour: np.ndarray  # the moving object's RGB
    scale: float
    noise: float  # standard deviation of per-frame Gaussian noise
    cx: float
    cy: float


# Object colours, shared by all classes: colour tells nothing of the class.
PALETTE = np.array(
    [[250, 250, 250], [15, 15, 15], [250, 220, 0], [0, 200, 250], [230, 0, 200], [250, 120, 0]],
    dtype=np.float32,
)
N_BACKGROUNDS = 8


def background_pool(seed: int) -> list[tuple[np.ndarray, np.ndarray, float, float, float]]:
    """Backgrounds shared by all classes: (colour a, colour b, gradient angle,
    texture amplitude, texture frequency)."""
    rng = np.random.default_rng([seed, 7919])
    pool = []
    for _ in range(N_BACKGROUNDS):
        # Muted backgrounds: a grey level with a tint, a gentle gradient and texture.
        base = rng.uniform(60, 190) + rng.uniform(-25, 25, 3)
        pool.append(
            (
                (base - rng.uniform(0, 30, 3)).astype(np.float32),
                (base + rng.uniform(0, 30, 3)).astype(np.float32),
                float(rng.uniform(0, 2 * np.pi)),
                float(rng.uniform(0, 12)),
                float(rng.uniform(0.01, 0.05)),
            )
        )
    return pool


def make_scene(rng: np.random.Generator, width: int, height: int, seed: int) -> Scene:
    """A group's scene: a background from the shared pool and an object colour
    from the shared palette (so neither names the class), with the group's own
    size, noise and position (so clips of one group are near-duplicates)."""
    bg_a, bg_b, angle, texture, freq = background_pool(seed)[rng.integers(N_BACKGROUNDS)]
    mid = (bg_a + bg_b) / 2
    # An object colour far enough from the background to stay visible.
    visible = [c for c in PALETTE if np.linalg.norm(c - mid) > 120] or list(PALETTE)
    colour = visible[rng.integers(len(visible))]
    unit = min(width, height) / 240
    return Scene(
        bg_a=bg_a,
        bg_b=bg_b,
        bg_angle=angle,
        texture=texture,
        texture_freq=freq,
        colour=colour,
        scale=float(rng.uniform(0.8, 1.2)) * unit,
        noise=float(rng.uniform(0, 12)),
        cx=width / 2 + float(rng.uniform(-0.1, 0.1)) * width,
        cy=height / 2 + float(rng.uniform(-0.1, 0.1)) * height,
    )


@dataclass(frozen=True)
class Canvas:
    x: np.ndarray  # pixel x coordinates relative to the object's centre
    y: np.ndarray
    background: np.ndarray  # float32 [H, W, 3]


def make_canvas(scene: Scene, width: int, height: int, dx: float, dy: float) -> Canvas:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    proj = xx * np.cos(scene.bg_angle) + yy * np.sin(scene.bg_angle)
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    bg = scene.bg_a * (1 - t[..., None]) + scene.bg_b * t[..., None]
    bg += scene.texture * np.sin(scene.texture_freq * (xx + 0.7 * yy))[..., None]
    return Canvas(xx - scene.cx - dx, yy - scene.cy - dy, bg.astype(np.float32))


# Each renderer maps (canvas x, canvas y, progress 0..1, scene, clip rng
# parameters) to an object mask in [0, 1] and a brightness factor.
Mask = tuple[np.ndarray, float]


def _disk(x, y, r):
    return (x * x + y * y <= r * r).astype(np.float32)


def _grow(x, y, p, s, k) -> Mask:
    return _disk(x, y, s.scale * (12 + 50 * p)), 1.0


def _rotating_bar(x, y, p, s, k, direction: float) -> Mask:
    # Image y points down, so a growing angle turns clockwise on screen.
    theta = k["phase"] + direction * np.pi * p
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    half_len, half_w = 48 * s.scale, 12 * s.scale
    return ((np.abs(u) <= half_len) & (np.abs(v) <= half_w)).astype(np.float32), 1.0


def _square(x, y, p, s, k, brightness: float) -> Mask:
    h = 32 * s.scale
    return ((np.abs(x) <= h) & (np.abs(y) <= h)).astype(np.float32), brightness


def _bounce(x, y, p, s, k) -> Mask:
    height = 45 * s.scale * abs(np.sin(np.pi * (k["speed"] * p + k["phase"])))
    d = np.sqrt(x * x + (y - 25 * s.scale + height) ** 2)
    r = 22 * s.scale
    return (np.abs(d - r) <= 8 * s.scale).astype(np.float32), 1.0


def _swing(x, y, p, s, k) -> Mask:
    x = x - 45 * s.scale * np.sin(2 * np.pi * (k["speed"] * p + k["phase"]))
    h = 38 * s.scale
    inside = (y <= h / 2) & (y >= -h) & (np.abs(x) <= (y + h) * 0.6)
    return inside.astype(np.float32), 1.0


def _stripes(x, y, p, s, k) -> Mask:
    r = 50 * s.scale
    wave = np.sin(2 * np.pi * (x / (26 * s.scale) - 2 * k["speed"] * p))
    return ((x * x + y * y <= r * r) & (wave > 0)).astype(np.float32), 1.0


def _checker(x, y, p, s, k) -> Mask:
    h = 45 * s.scale
    cell = 22.5 * s.scale
    flip = int(k["speed"] * 4 * p + k["phase"] * 2) % 2
    board = ((np.floor(x / cell) + np.floor(y / cell) + flip) % 2).astype(np.float32)
    return board * ((np.abs(x) <= h) & (np.abs(y) <= h)), 1.0


RENDERERS: dict[str, Callable[..., Mask]] = {
    "Grow": _grow,
    "Shrink": lambda x, y, p, s, k: _grow(x, y, 1 - p, s, k),
    "RotateClockwise": lambda x, y, p, s, k: _rotating_bar(x, y, p, s, k, 1.0),
    "RotateAnticlockwise": lambda x, y, p, s, k: _rotating_bar(x, y, p, s, k, -1.0),
    "Brighten": lambda x, y, p, s, k: _square(x, y, p, s, k, 0.15 + 0.85 * p),
    "Darken": lambda x, y, p, s, k: _square(x, y, p, s, k, 1.0 - 0.85 * p),
    "Bounce": _bounce,
    "Swing": _swing,
    "Stripes": _stripes,
    "Checker": _checker,
}


def _compose(
    canvas: Canvas, scene: Scene, mask: np.ndarray, brightness: float, rng: np.random.Generator
) -> np.ndarray:
    """The object drawn over the background, with the scene's noise."""
    frame = canvas.background + mask[..., None] * (scene.colour * brightness - canvas.background)
    if scene.noise > 0:
        # Sensor noise in 2 x 2 blocks: a quarter of the random draws, which
        # dominate rendering time; frames are seen far smaller than rendered.
        h, w = frame.shape[:2]
        grain = rng.standard_normal(((h + 1) // 2, 1, (w + 1) // 2, 1, 3), dtype=np.float32)
        grain = np.broadcast_to(grain, (grain.shape[0], 2, grain.shape[2], 2, 3))
        frame += scene.noise * grain.reshape(2 * grain.shape[0], 2 * grain.shape[2], 3)[:h, :w]
    return np.clip(frame, 0, 255, out=frame).astype(np.uint8)


def _clip_params(rng: np.random.Generator, scene: Scene, width: int, height: int):
    jitter = 0.02 * min(width, height)
    canvas = make_canvas(
        scene, width, height, rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)
    )
    return canvas, {"phase": float(rng.uniform(0, 1)), "speed": float(rng.uniform(0.8, 1.6))}


def render_frames(
    cls: str,
    scene: Scene,
    rng: np.random.Generator,
    n_frames: int,
    width: int,
    height: int,
) -> Iterator[np.ndarray]:
    """The RGB uint8 frames of one clip of ``cls`` in ``scene``."""
    canvas, k = _clip_params(rng, scene, width, height)
    draw = RENDERERS[cls]
    for i in range(n_frames):
        p = i / max(n_frames - 1, 1)
        mask, brightness = draw(canvas.x, canvas.y, p, scene, k)
        yield _compose(canvas, scene, mask, brightness, rng)


# Still images for pretraining: what one frame shows. The three kinds whose
# classes differ only in temporal order are labelled by the attribute that
# changes over a clip (a disk's size, a bar's orientation, a square's
# brightness) in ATTRIBUTE_BINS bins; the other kinds by kind alone.
ATTRIBUTE_BINS = 4
IMAGE_KINDS = {
    # kind: (class whose renderer draws it, progress p that shows attribute a in [0, 1))
    "disk": ("Grow", lambda a, k: a),
    # The bar's angle is phase + pi * p; its orientation repeats every pi.
    "bar": ("RotateClockwise", lambda a, k: (a - k["phase"] / np.pi) % 1.0),
    "square": ("Brighten", lambda a, k: a),
    "bounce": ("Bounce", None),
    "swing": ("Swing", None),
    "stripes": ("Stripes", None),
    "checker": ("Checker", None),
}


def image_labels() -> list[str]:
    """The names of the pretraining labels, in label order."""
    names = []
    for kind, (_, attribute) in IMAGE_KINDS.items():
        bins = range(ATTRIBUTE_BINS) if attribute else [None]
        names += [kind if b is None else f"{kind}-{b}" for b in bins]
    return names


def render_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled still images (uint8 [n, S, S, 3], labels per
    :func:`image_labels`, equally likely), each from a scene of its own drawn
    from a random stream apart from the demo videos': rendered at 2 x ``size``
    and averaged down, as :func:`render_in_memory` does."""
    names = image_labels()
    side = 2 * size
    images, labels = np.empty((n, size, size, 3), np.uint8), np.empty(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, 104729, i])
        labels[i] = int(rng.integers(len(names)))
        kind, _, attribute_bin = names[labels[i]].partition("-")
        cls, progress = IMAGE_KINDS[kind]
        scene = make_scene(rng, side, side, seed)
        canvas, k = _clip_params(rng, scene, side, side)
        a = (int(attribute_bin or 0) + float(rng.uniform(0, 1))) / ATTRIBUTE_BINS
        p = progress(a, k) if progress else float(rng.uniform(0, 1))
        mask, brightness = RENDERERS[cls](canvas.x, canvas.y, p, scene, k)
        image = _compose(canvas, scene, mask, brightness, rng).astype(np.float32)
        images[i] = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3)).round()
    return images, labels


@dataclass(frozen=True)
class ClipSpec:
    cls: str
    group: int
    clip: int
    n_frames: int
    path: Path


def plan_dataset(
    root: str | os.PathLike,
    *,
    classes: list[str],
    groups: int,
    clips_per_group: int,
    min_frames: int,
    max_frames: int,
    seed: int,
) -> list[ClipSpec]:
    """Every clip to render, with its length; deterministic from ``seed``."""
    unknown = [c for c in classes if c not in RENDERERS]
    if unknown:
        raise ValueError(f"unknown demo classes {unknown}; choose from {list(DEMO_CLASSES)}")
    if not 1 <= min_frames <= max_frames:
        raise ValueError("demo frame counts need 1 <= min_frames <= max_frames")
    rng = np.random.default_rng(seed)
    specs = []
    for cls in classes:
        for g in range(1, groups + 1):
            for c in range(1, clips_per_group + 1):
                n = int(rng.integers(min_frames, max_frames + 1))
                name = f"v_{cls}_g{g:02d}_c{c:02d}.avi"
                specs.append(ClipSpec(cls, g, c, n, Path(root) / cls / name))
    return specs


def _seed_for(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def render_clip(spec: ClipSpec, width: int, height: int, fps: float, seed: int) -> Path:
    """Render and encode one clip; the file appears only once complete."""
    ci = DEMO_CLASSES.index(spec.cls)
    scene = make_scene(_seed_for(seed, ci, spec.group), width, height, seed)
    rng = _seed_for(seed, ci, spec.group, spec.clip)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.path.with_name(f".{spec.path.name}.part")
    frames = render_frames(spec.cls, scene, rng, spec.n_frames, width, height)
    write_video(tmp, frames, width, height, fps, container="avi")
    os.replace(tmp, spec.path)
    return spec.path


def render_dataset(
    root: str | os.PathLike, *, seed: int, workers: int = 1, **options
) -> list[Path]:
    """Render the demo dataset under ``root``; returns the clip paths.
    ``options``: the config's demo section, defaults for the keys left out."""
    demo = with_defaults("demo", options)
    classes = list(demo["classes"])
    specs = plan_dataset(
        root,
        classes=classes,
        groups=demo["groups"],
        clips_per_group=demo["clips_per_group"],
        min_frames=demo["min_frames"],
        max_frames=demo["max_frames"],
        seed=seed,
    )
    width, height, fps = demo["width"], demo["height"], demo["fps"]
    log.info("rendering %d clips of %d classes into %s", len(specs), len(classes), root)
    n = len(specs)
    shared = (width, height, fps, seed)
    paths = []
    with ProcessPoolExecutor(max(workers, 1)) as pool:
        for i, path in enumerate(pool.map(render_clip, specs, *[[a] * n for a in shared]), 1):
            paths.append(path)
            if i % 20 == 0 or i == n:
                log.info("rendered %d/%d clips", i, n)
    return paths


def render_in_memory(
    classes: list[str], groups, frames: int, size: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One clip per (class, group) without video files: rendered at 2 x
    ``size``, sampled to ``frames`` like extraction, averaged down to
    ``size``. Returns uint8 clips [n, T, S, S, 3] and labels (class order)."""
    from .video import sample_indices

    xs, ys = [], []
    side = 2 * size
    for label, cls in enumerate(classes):
        for g in groups:
            scene = make_scene(np.random.default_rng([seed, label, g]), side, side, seed)
            rng = np.random.default_rng([seed, label, g, 1])
            n = int(rng.integers(12, 25))
            clip = np.stack(list(render_frames(cls, scene, rng, n, side, side)))
            clip = clip[sample_indices(n, frames)].astype(np.float32)
            clip = clip.reshape(frames, size, 2, size, 2, 3).mean(axis=(2, 4))
            xs.append(clip.round().astype(np.uint8))
            ys.append(label)
    return np.stack(xs), np.array(ys)
