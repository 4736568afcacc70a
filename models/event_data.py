"""Event-stream datasets: the bundled synthetic ``digits-events`` and folders of event frames.

``digits-events`` is SYNTHETIC: scikit-learn's 8x8 digits seen by an emulated event camera
(a dynamic vision sensor, DVS). No recording was made; the sensor model below is how
event-camera emulators (v2e, ESIM) turn intensity video into events, without their noise
models, so the dataset is exactly reproducible offline:

1. Each digit (pixel counts 0..16 scaled to intensity 0..1) is upsampled by ``UPSAMPLE``
   (bilinear) and placed on a dark ``CANVAS`` x ``CANVAS`` canvas.
2. The canvas image moves along a short saccade path, a closed triangle through
   ``SACCADE_CORNERS`` pixels (N-MNIST moved its sensor along three saccades the same
   way), sampled at ``FRAMES * SUBSTEPS`` equally spaced positions; each position renders
   the digit shifted by sub-pixel amounts (bilinear).
3. Every pixel keeps a reference log intensity ``L_ref`` (initially the first position's
   ``log(I + LOG_EPS)``). At each position, while ``L - L_ref >= CONTRAST`` the pixel emits
   an ON event and ``L_ref += CONTRAST``; while ``L_ref - L >= CONTRAST`` an OFF event and
   ``L_ref -= CONTRAST``.
4. Events are integrated into ``FRAMES`` frames of ``SUBSTEPS`` positions each, channel 0
   ON and channel 1 OFF; a frame pixel is 1 when at least one event of that polarity
   occurred in it (binary frames: deployed, they are sent as spikes).

Samples are ``(FRAMES, 2, CANVAS, CANVAS)`` = ``(8, 2, 16, 16)`` float32 in {0, 1}; the
train/test split is the stratified split of ``digits`` (same ``test_fraction``, ``seed``).
About 19 % of the frame pixels carry an event.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from lmh_deploy.errors import DataError, MissingFileError

#: Sensor-model parameters of ``digits-events`` (see the module docstring).
UPSAMPLE = 1.5  # 8x8 digit -> 12x12
CANVAS = 16  # frame height and width in pixels
SACCADE_CORNERS = ((0.0, 0.0), (1.5, 3.0), (3.0, 0.0), (0.0, 0.0))  # (dy, dx) pixels
FRAMES = 8  # frames per sample (the deployed network's T)
SUBSTEPS = 4  # sensor positions integrated into one frame
CONTRAST = 0.25  # log-intensity change per event (contrast threshold)
LOG_EPS = 0.1  # log(I + eps): keeps dark pixels finite, as emulators do


def digit_events(images: np.ndarray) -> np.ndarray:
    """Event frames ``(N, FRAMES, 2, CANVAS, CANVAS)`` (uint8 0/1) of intensity images ``(N, h, w)``.

    Deterministic: the same images always give the same events.
    """
    from scipy import ndimage

    big = np.clip(ndimage.zoom(np.asarray(images, np.float64), (1, UPSAMPLE, UPSAMPLE), order=1), 0.0, 1.0)
    n, h, w = big.shape
    if h > CANVAS - 3 or w > CANVAS - 3:
        raise DataError(
            f"digit of {h}x{w} pixels does not fit the {CANVAS}x{CANVAS} canvas with its saccades"
        )
    corners = np.asarray(SACCADE_CORNERS)
    steps = FRAMES * SUBSTEPS
    along = np.linspace(0.0, len(corners) - 1, steps + 1)
    path = np.stack([np.interp(along, np.arange(len(corners)), corners[:, k]) for k in range(2)], axis=1)
    # centre the path's bounding box on the canvas
    origin = (CANVAS - np.array([h, w])) / 2 - (path.max(0) + path.min(0)) / 2
    canvas = np.zeros((n, CANVAS, CANVAS))
    canvas[:, :h, :w] = big

    def log_intensity(offset: np.ndarray) -> np.ndarray:
        shifted = ndimage.shift(canvas, (0, *(origin + offset)), order=1, mode="constant")
        return np.log(np.clip(shifted, 0.0, 1.0) + LOG_EPS)

    reference = log_intensity(path[0])
    frames = np.zeros((n, FRAMES, 2, CANVAS, CANVAS), np.uint8)
    for k in range(1, steps + 1):
        change = log_intensity(path[k]) - reference
        on = np.floor(np.maximum(change, 0.0) / CONTRAST)
        off = np.floor(np.maximum(-change, 0.0) / CONTRAST)
        reference += (on - off) * CONTRAST
        f = (k - 1) // SUBSTEPS
        frames[:, f, 0] |= (on > 0).astype(np.uint8)
        frames[:, f, 1] |= (off > 0).astype(np.uint8)
    return frames


@lru_cache(maxsize=1)
def load_digits_events() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as event frames ``(N, 8, 2, 16, 16)`` float32 and labels.

    Computed once per process (about 2 s); the arrays are read-only.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    frames = digit_events(digits.images / 16.0).astype(np.float32)  # pixel counts are 0..16
    labels = np.asarray(digits.target)
    frames.flags.writeable = labels.flags.writeable = False
    return frames, labels


def read_event_folder(
    data_dir: str | os.PathLike[str] | None, require_dir
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[int, ...], int]:
    """Event frames from ``data_dir/{train,test}/<class>/*.npy`` (the ``events`` dataset).

    Returns ``(x_train, y_train), (x_test, y_test)``, the ``(T, C, H, W)`` sample shape and
    the number of class folders (counted, not inferred from labels, so an empty class still
    counts). ``require_dir`` checks ``data_dir`` and names the layout on failure.
    """
    layout = "<data_dir>/{train,test}/<class_name>/*.npy, each file a (T, C, H, W) array"
    root = require_dir(data_dir, "events", layout)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise MissingFileError(
                f"dataset 'events': {root / split} is missing; expected a folder laid out as {layout}"
            )
    # Labels come from the train folders, so a test folder may miss a class but
    # may not add one (it would have no label the model was trained on).
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    extra = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(
            f"dataset 'events': {root / 'test'} has classes {extra} that {root / 'train'} does not"
        )

    frame_shape: tuple[int, ...] | None = None

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        nonlocal frame_shape
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for file in sorted((root / split / cls).glob("*.npy")):
                frames = _read_frames(file)
                if frame_shape is None:
                    frame_shape = frames.shape
                elif frames.shape != frame_shape:
                    raise DataError(
                        f"{file}: frames have shape {frames.shape}, but earlier "
                        f"files have {frame_shape}; all samples must match"
                    )
                xs.append(frames)
                ys.append(label)
        if not xs:
            raise MissingFileError(
                f"dataset 'events': no .npy files under {root / split}; "
                f"expected a folder laid out as {layout}"
            )
        return np.stack(xs), np.array(ys)

    train, test = read("train"), read("test")
    assert frame_shape is not None  # read() raised otherwise
    return train, test, frame_shape, len(classes)


def _read_frames(file: Path) -> np.ndarray:
    try:
        # allow_pickle=False: a .npy with object data could run code.
        frames = np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"cannot load {file}: {exc}") from exc
    if frames.ndim != 4:
        raise DataError(f"{file}: frames must be (T, C, H, W), got shape {frames.shape}")
    frames = frames.astype(np.float32)
    # Scale is the folder builder's choice (binary spikes, normalised counts);
    # rescaling here would silently change it, so refuse.
    if not (np.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1):
        raise DataError(
            f"{file}: frame values must be in [0, 1]; binarise or "
            f"normalise event counts when building the folder"
        )
    return frames


def is_binary(x: np.ndarray) -> bool:
    """True when every value is 0 or 1 (event frames that can be sent as spikes)."""
    return bool(np.all((x == 0) | (x == 1)))
