"""Corruptions of video clips, for measuring how robust a model is.

Eleven corruptions in seven families, each at severities 1-5, after the
benchmarks that define robustness for action recognition:

- Mini Kinetics-C and Mini SSv2-C (Yi et al., NeurIPS 2021, "Benchmarking
  the robustness of spatial-temporal models against corruptions"): image
  corruptions applied to every frame, H.264 re-encoding at rising CRF and a
  lower frame rate; a model's score is mPC, its mean accuracy under
  corruption, and rPC = mPC / clean accuracy;
- UCF101-P (Schiappa et al., CVPR 2023, "Large-scale robustness analysis of
  video action recognition models"): noise, blur, digital, camera motion
  (translation, rotation) and temporal (frozen frames) families;
- ImageNet-C (Hendrycks and Dietterich, ICLR 2019), whose per-severity
  parameter tables (``imagenet_c/corruptions.py`` in hendrycks/robustness)
  the noise, blur, brightness and contrast corruptions here take over;
- low light, which none of them has, modelled on how dark footage is dark
  (ARID, Xu et al., 2021): less light reaching the sensor, with the noise
  that comes with few photons.

Every corruption is a function ``f(frames, severity, rng)`` of a clip's
frames, uint8 [N, H, W, 3] in time order, that returns uint8 of the same
shape; randomness comes only from ``rng``. Sizes in pixels are ImageNet-C's
at 224 x 224 and scale with the frame's side, so that a severity blurs,
shakes or occludes the same share of the scene at any resolution.

A shard stores K frames of each of T segments, N = T x K, frame s*K + k
being stored frame k of segment s: the N frames are in time order, and the
corruptions that act across frames (compression, dropped frames, camera
shake, a drifting occluder) treat them as one sequence in that order.
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage, signal

if TYPE_CHECKING:
    from .pipeline import Transform

SEVERITIES = (1, 2, 3, 4, 5)
# The side at which ImageNet-C's sizes in pixels hold.
REFERENCE_SIDE = 224

# Low light: exposure in linear light (about -1.7 to -5.3 stops, a frame of
# mean 110/255 falls to about 61, 43, 30, 20, 13), a cool cast in linear
# light (red down, blue up by this share), and the sensor's electrons at
# white before darkening and read noise in electrons rms (a small sensor).
LOW_LIGHT_EXPOSURE = (0.3, 0.15, 0.08, 0.045, 0.025)
LOW_LIGHT_CAST = (0.03, 0.06, 0.09, 0.12, 0.15)
FULL_WELL_ELECTRONS = 4000.0
READ_NOISE_ELECTRONS = 3.0
# ImageNet-C's brightness: added to the HSV value (share of full scale).
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
# ImageNet-C's contrast: the factor on each frame's deviation from its mean.
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
# ImageNet-C's Gaussian noise: standard deviation, share of full scale.
GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
# ImageNet-C's (and Mini Kinetics-C's) shot noise: photons at white.
SHOT_PHOTONS = (60, 25, 12, 5, 3)
# ImageNet-C's motion blur: (radius, sigma) in pixels at 224, as ImageMagick
# reads them: a one-sided Gaussian trail of sigma, cut at 2 x radius.
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
MOTION_ANGLE_DEGREES = 45.0  # the trail's direction, uniform in +-45 degrees
# ImageNet-C's defocus blur: disc radius in pixels at 224.
DEFOCUS_RADIUS = (3, 4, 6, 8, 10)
# Mini Kinetics-C's h264_crf: libx264's constant rate factor.
COMPRESSION_CRF = (23, 30, 37, 44, 51)
COMPRESSION_TIMEOUT_SECONDS = 60.0
# Share of frames lost; severity 5 is Mini Kinetics-C's 6 fps of 30.
DROPPED_SHARE = (0.2, 0.35, 0.5, 0.65, 0.8)
# Camera shake: the most the view moves, as a share of the side (UCF101-P
# translates by up to 8, 16, ... 40 px of 224) and in degrees of rotation.
SHAKE_TRANSLATION = (0.035, 0.07, 0.105, 0.14, 0.175)
SHAKE_ROTATION_DEGREES = (2.0, 4.0, 6.0, 8.0, 10.0)
# Occlusion: share of the frame's area under a mid-grey rectangle.
OCCLUDED_SHARE = (0.1, 0.2, 0.3, 0.4, 0.5)
OCCLUDER_GREY = 128
OCCLUDER_ASPECT = 2.0  # height to width, drawn in [1/2, 2]

Frames = np.ndarray
CorruptionFunction = Callable[[Frames, int, np.random.Generator], Frames]


class Corruption(NamedTuple):
    family: str
    apply: CorruptionFunction
    parameters: str  # what each severity sets, one line


def _level(table: tuple, severity: int):
    return table[severity - 1]


def _listed(table: tuple) -> str:
    return "/".join(f"{v:g}" for v in table)


def _scale(frames: Frames) -> float:
    return min(frames.shape[1:3]) / REFERENCE_SIDE


def _unit(frames: Frames) -> np.ndarray:
    return frames.astype(np.float32) / np.float32(255.0)


def _to_uint8(x: np.ndarray) -> Frames:
    """Frames in [0, 1] back to uint8, rounded (ImageNet-C truncates)."""
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


# uint8 sRGB -> linear light, looked up: a fifth of the time of the power law.
_LINEAR = _srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def low_light(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """Dark footage as a camera records it: the light on the sensor cut to
    :data:`LOW_LIGHT_EXPOSURE` in linear light (sRGB decoded), a cool cast,
    then the sensor's noise at that light, Poisson shot noise of the
    electrons collected (of :data:`FULL_WELL_ELECTRONS` at white) and
    Gaussian read noise, encoded back to sRGB. The noise relative to the
    signal grows as the light falls, as it does in ARID's dark clips; at
    severity 5 a frame of mean 110/255 keeps a mean of about 13/255."""
    cast = _level(LOW_LIGHT_CAST, severity)
    gain = _level(LOW_LIGHT_EXPOSURE, severity) * np.array([1 - cast, 1.0, 1 + cast])
    electrons = _LINEAR[frames] * (gain * FULL_WELL_ELECTRONS).astype(np.float32)
    read = rng.standard_normal(frames.shape, dtype=np.float32) * READ_NOISE_ELECTRONS
    collected = rng.poisson(electrons).astype(np.float32) + read
    return _to_uint8(_linear_to_srgb(collected / FULL_WELL_ELECTRONS))


def brightness(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's brightness: :data:`BRIGHTNESS_SHIFT` added to the HSV
    value, hue and saturation kept. Computed without the HSV round trip:
    with hue and saturation fixed, every channel scales with the value."""
    x = _unit(frames)
    value = x.max(axis=-1, keepdims=True)
    brighter = np.minimum(value + _level(BRIGHTNESS_SHIFT, severity), 1.0)
    # A black pixel has no hue: it turns grey, as HSV's conversion has it.
    return _to_uint8(np.where(value > 0, x * (brighter / np.maximum(value, 1e-6)), brighter))


def contrast(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's contrast: each frame's deviation from its per-channel
    mean multiplied by :data:`CONTRAST_FACTOR`."""
    x = _unit(frames)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((x - mean) * _level(CONTRAST_FACTOR, severity) + mean)


def gaussian_noise(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's Gaussian noise: independent per pixel, channel and
    frame, of standard deviation :data:`GAUSSIAN_SIGMA` of full scale."""
    noise = rng.standard_normal(frames.shape, dtype=np.float32)
    return _to_uint8(_unit(frames) + noise * np.float32(_level(GAUSSIAN_SIGMA, severity)))


def shot_noise(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's shot noise, as Mini Kinetics-C applies it: every value
    redrawn as Poisson photon counts with :data:`SHOT_PHOTONS` at white."""
    photons = _level(SHOT_PHOTONS, severity)
    return _to_uint8(rng.poisson(_unit(frames) * photons).astype(np.float32) / photons)


def _filtered(frames: Frames, kernel: np.ndarray) -> Frames:
    """Every frame and channel convolved with a 2-D kernel of odd sides,
    the borders mirrored (as OpenCV's filter2D, which ImageNet-C uses)."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    x = np.pad(_unit(frames), ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect")
    out = signal.fftconvolve(x, kernel[None, :, :, None].astype(np.float32), "valid", axes=(1, 2))
    return _to_uint8(out)


def _splatted(y: np.ndarray, x: np.ndarray, weight: np.ndarray, half: int) -> np.ndarray:
    """A kernel of side 2 x ``half`` + 1 from weighted points at sub-pixel
    offsets (``y``, ``x``) from its centre, each spread over its four
    nearest pixels: the kernel acts on the image as bilinear interpolation
    sees it, so that sizes below a pixel (small frames) still blur, a little."""
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    y, x = y + half, x + half
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    for dy, dx, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        np.add.at(kernel, (y0 + dy, x0 + dx), weight * share)
    return kernel / kernel.sum()


def trail_kernel(radius: float, sigma: float, angle_degrees: float) -> np.ndarray:
    """ImageMagick's motion-blur kernel, as ImageNet-C calls it: taps along
    a line from the centre in direction ``angle_degrees``, weighted by a
    Gaussian of ``sigma`` in the distance and cut at 2 x ``radius`` pixels,
    here sampled finely rather than at whole pixels."""
    length = 2.0 * radius
    t = np.linspace(0.0, length, int(np.ceil(length * 8)) + 2)
    angle = np.deg2rad(angle_degrees)
    weight = np.exp(-(t**2) / (2.0 * sigma**2))
    return _splatted(-t * np.sin(angle), t * np.cos(angle), weight, int(np.ceil(length)) + 1)


def disc_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """A uniform disc of ``radius`` pixels, sampled ``supersample`` times
    per pixel and side (ImageNet-C antialiases its aliased disc with a
    slight Gaussian instead)."""
    half = int(np.ceil(radius)) + 1
    grid = np.arange(-half * supersample, half * supersample + 1) / supersample
    y, x = np.meshgrid(grid, grid, indexing="ij")
    inside = y**2 + x**2 <= radius**2
    return _splatted(y[inside], x[inside], np.ones(int(inside.sum())), half)


def motion_blur(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's motion blur (:data:`MOTION_BLUR`, pixels at 224 scaled
    to the frame), in one direction for the whole clip, drawn uniformly in
    +-:data:`MOTION_ANGLE_DEGREES` as ImageNet-C draws it per image: a
    camera that moves the same way through a short clip."""
    radius, sigma = (v * _scale(frames) for v in _level(MOTION_BLUR, severity))
    angle = rng.uniform(-MOTION_ANGLE_DEGREES, MOTION_ANGLE_DEGREES)
    return _filtered(frames, trail_kernel(radius, sigma, angle))


def defocus_blur(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """ImageNet-C's defocus blur: a disc of radius :data:`DEFOCUS_RADIUS`
    (pixels at 224, scaled to the frame)."""
    return _filtered(frames, disc_kernel(_level(DEFOCUS_RADIUS, severity) * _scale(frames)))


def _run_ffmpeg(args: list[str], data: bytes, what: str) -> bytes:
    # Imported here: the other corruptions need only NumPy and SciPy.
    from .video import find_ffmpeg

    command = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    try:
        done = subprocess.run(
            command, input=data, capture_output=True, timeout=COMPRESSION_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(
            f"compression: ffmpeg took over {COMPRESSION_TIMEOUT_SECONDS:g} s to {what}"
        ) from err
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeError(
            f"compression: ffmpeg failed to {what} (exit {done.returncode}): {message}; "
            "it needs an ffmpeg built with libx264"
        )
    return done.stdout


def compression(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """Mini Kinetics-C's h264_crf: the clip's frames, in stored (time)
    order, encoded with libx264 at constant rate factor
    :data:`COMPRESSION_CRF` (4:2:0 chroma, preset medium, one thread, so
    that the same frames always give the same result with one ffmpeg) and
    decoded back. Odd sides are padded by repeating the edge for the
    encoder and cropped back."""
    n, h, w, _ = frames.shape
    even = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    size = f"{even.shape[2]}x{even.shape[1]}"
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24"]
    stream = _run_ffmpeg(
        [*raw, "-s", size, "-r", "25", "-i", "pipe:0", "-c:v", "libx264", "-preset", "medium"]
        + ["-crf", str(_level(COMPRESSION_CRF, severity)), "-pix_fmt", "yuv420p"]
        + ["-threads", "1", "-f", "h264", "pipe:1"],
        np.ascontiguousarray(even).tobytes(),
        "encode",
    )
    decoded = _run_ffmpeg(
        ["-f", "h264", "-i", "pipe:0", "-fps_mode", "passthrough", *raw, "pipe:1"],
        stream,
        "decode",
    )
    if len(decoded) != even.size:
        raise RuntimeError(
            f"compression: ffmpeg gave back {len(decoded) // (even.size // n)} of {n} frames"
        )
    return np.frombuffer(decoded, np.uint8).reshape(even.shape)[:, :h, :w].copy()


def dropped_frames(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """Frames lost, as in a stalling stream or a lower frame rate (Mini
    Kinetics-C's frame_rate, UCF101-P's freeze): a share
    :data:`DROPPED_SHARE` of the frames, drawn at random, each replaced by
    the last kept frame before it. The stored frames are one sequence in
    time order (frame s*K + k), so with K > 1 frames per segment the last
    kept frame may belong to an earlier segment, as in a stream that
    stalled across it. The first frame is always kept, and a higher
    severity loses the frames a lower one loses, and more."""
    n = len(frames)
    kept = max(1, int(np.floor(n * (1 - _level(DROPPED_SHARE, severity)) + 0.5)))
    keep = np.zeros(n, dtype=bool)
    keep[0] = True
    # One order of the other frames for every severity: a higher one loses
    # the same frames and more.
    keep[1 + rng.permutation(n - 1)[: kept - 1]] = True
    last_kept = np.maximum.accumulate(np.where(keep, np.arange(n), 0))
    return frames[last_kept]


def camera_shake(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """A shaking hand-held camera (UCF101-P's camera family, translation and
    rotation): every frame shifted and rotated about its centre by a random
    walk over the clip's frames, in time order, with steps of a standard
    deviation of half the amplitude (:data:`SHAKE_TRANSLATION` of the
    side, :data:`SHAKE_ROTATION_DEGREES`), held within the amplitude;
    borders repeat the edge pixels. A clip's walk is one draw scaled by the
    amplitude, so that a higher severity moves it further along the same
    path."""
    n, h, w, _ = frames.shape
    shift = _level(SHAKE_TRANSLATION, severity) * min(h, w)
    turn = np.deg2rad(_level(SHAKE_ROTATION_DEGREES, severity))
    steps = rng.standard_normal((n, 3)) / 2
    walk = np.empty_like(steps)
    pose = np.zeros(3)
    for i, step in enumerate(steps):
        # Held at the edge rather than cut after the fact, so that a walk
        # past the amplitude turns back at once instead of freezing there.
        pose = walk[i] = np.clip(pose + step, -1.0, 1.0)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    x = _unit(frames)
    out = np.empty_like(x)
    for i, (dy, dx, angle) in enumerate(walk * [shift, shift, turn]):
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.array([[cos, -sin], [sin, cos]])
        # affine_transform maps each output pixel to the input pixel it shows;
        # a channel at a time, as one 3-D call interpolates across channels too.
        offset = centre - rotation @ (centre + [dy, dx])
        for c in range(3):
            out[i, ..., c] = ndimage.affine_transform(
                x[i, ..., c], rotation, offset, order=1, mode="nearest"
            )
    return _to_uint8(out)


def occlusion(frames: Frames, severity: int, rng: np.random.Generator) -> Frames:
    """Something passing in front of the camera: a mid-grey rectangle
    covering :data:`OCCLUDED_SHARE` of each frame's area, of an aspect
    ratio drawn per clip (between 1:2 and 2:1, which at half the area still
    fits the frame), drifting in a straight line from a random place in the
    first frame to one in the last, always whole inside the frame."""
    n, h, w, _ = frames.shape
    share = _level(OCCLUDED_SHARE, severity)
    aspect = np.exp(rng.uniform(-np.log(OCCLUDER_ASPECT), np.log(OCCLUDER_ASPECT)))
    rows = min(h, max(1, round(np.sqrt(share * aspect) * h)))
    cols = min(w, max(1, round(share * h * w / rows)))
    start, end = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
    out = frames.copy()
    for i, t in enumerate(np.linspace(0.0, 1.0, n)):
        y, x = (1 - t) * start + t * end
        top, left = round(y * (h - rows)), round(x * (w - cols))
        out[i, top : top + rows, left : left + cols] = OCCLUDER_GREY
    return out


CORRUPTIONS: dict[str, Corruption] = {
    "low_light": Corruption(
        "light",
        low_light,
        f"exposure x{_listed(LOW_LIGHT_EXPOSURE)} in linear light, blue cast "
        f"{_listed(LOW_LIGHT_CAST)}, shot noise of {FULL_WELL_ELECTRONS:g} e- at white "
        f"and read noise {READ_NOISE_ELECTRONS:g} e-",
    ),
    "brightness": Corruption(
        "light", brightness, f"HSV value + {_listed(BRIGHTNESS_SHIFT)} (ImageNet-C)"
    ),
    "gaussian_noise": Corruption(
        "noise", gaussian_noise, f"sigma {_listed(GAUSSIAN_SIGMA)} of full scale (ImageNet-C)"
    ),
    "shot_noise": Corruption(
        "noise", shot_noise, f"Poisson, {_listed(SHOT_PHOTONS)} photons at white (ImageNet-C)"
    ),
    "motion_blur": Corruption(
        "blur",
        motion_blur,
        "one-sided Gaussian trail, (radius, sigma) "
        + "/".join(f"({r},{s})" for r, s in MOTION_BLUR)
        + f" px at 224, direction per clip in +-{MOTION_ANGLE_DEGREES:g} deg (ImageNet-C)",
    ),
    "defocus_blur": Corruption(
        "blur", defocus_blur, f"disc radius {_listed(DEFOCUS_RADIUS)} px at 224 (ImageNet-C)"
    ),
    "contrast": Corruption(
        "digital", contrast, f"deviation from the mean x{_listed(CONTRAST_FACTOR)} (ImageNet-C)"
    ),
    "compression": Corruption(
        "digital",
        compression,
        f"H.264 (libx264) CRF {_listed(COMPRESSION_CRF)} (Mini Kinetics-C)",
    ),
    "dropped_frames": Corruption(
        "temporal",
        dropped_frames,
        f"{_listed(DROPPED_SHARE)} of frames replaced by the last kept one",
    ),
    "camera_shake": Corruption(
        "camera",
        camera_shake,
        f"random-walk shift up to {_listed(SHAKE_TRANSLATION)} of the side and rotation up to "
        f"{_listed(SHAKE_ROTATION_DEGREES)} deg",
    ),
    "occlusion": Corruption(
        "occlusion",
        occlusion,
        f"drifting grey rectangle over {_listed(OCCLUDED_SHARE)} of the area",
    ),
}


def check_condition(name: str, severity: int) -> None:
    """Unknown corruptions and severities outside 0..5 raise, naming the allowed ones."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {list(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be one of {[0, *SEVERITIES]} (0: clean), not {severity!r}")


def corrupt(frames: Frames, name: str, severity: int, seed: int, position: int) -> Frames:
    """``frames`` (uint8 [N, H, W, 3], in time order) under corruption
    ``name`` at ``severity``; severity 0 returns them unchanged.

    The draw depends on (seed, name, position) alone, so that a clip (its
    position in its split) is corrupted the same way in every run,
    whichever worker reads it and in whatever order. It is the same at
    every severity (common random numbers): a clip keeps its blur
    direction, noise draws, shake path, lost frames and occluder path
    while only their strength grows, so that accuracy across severities
    measures the strength rather than a new draw."""
    check_condition(name, severity)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 [N, H, W, 3] with N >= 1, not {frames.dtype} {frames.shape}"
        )
    if severity == 0:
        return frames
    if seed < 0 or position < 0:
        raise ValueError(f"seed and position must be >= 0, not {seed} and {position}")
    # crc32, not hash(): Python salts str hashes per process. The severity
    # stays out of the key: every severity of a clip shares one draw.
    key = [int(seed), zlib.crc32(name.encode()), int(position)]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    out = CORRUPTIONS[name].apply(frames, severity, rng)
    if out.dtype != np.uint8 or out.shape != frames.shape:
        raise RuntimeError(f"{name} gave {out.dtype} {out.shape} for uint8 {frames.shape}")
    return out


def transform_for(name: str, severity: int, seed: int) -> Transform:
    """The evaluation's frame transform (:data:`.pipeline.Transform`) that
    applies :func:`corrupt`: (stored frames uint8 [N, S, S, 3], the clip's
    position in its split) -> frames of the same shape. At severity 0 the
    frames pass through untouched."""
    check_condition(name, severity)
    import tensorflow as tf

    def transform(frames: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
        if severity == 0:
            return frames
        out = tf.numpy_function(
            lambda x, p: corrupt(x, name, severity, seed, int(p)),
            [frames, position],
            tf.uint8,
            stateful=False,
        )
        return tf.ensure_shape(out, frames.shape)

    return transform
