"""Real event-camera datasets from their distributed on-disk formats, read with numpy.

* **N-MNIST** (Orchard et al. 2015), ``data_dir/{Train,Test}/<digit>/*.bin``: every event is
  5 bytes, big-endian bit fields: x (8 bits), y (8 bits), polarity (1 bit, 1 = ON),
  timestamp in microseconds (23 bits). Sensor 34 x 34.
* **DVS-CIFAR10** (Li et al. 2017), ``data_dir/<class>/*.aedat`` with the ten CIFAR-10 class
  folders. Files start with ``#`` header lines. ``#!AER-DAT3.1`` files hold packets (28-byte
  little-endian packet header; polarity events, type 1, are 8 bytes: ``uint32`` data with
  valid bit 0, polarity bit 1, y bits 2-16, x bits 17-31, then an ``int32`` timestamp).
  Other (``#!AER-DAT2.0``, jAER DVS128) files hold big-endian ``uint32`` pairs (address,
  timestamp) with polarity bit 0, x bits 1-7, y bits 8-14; they are oriented as tonic and
  spikingjelly read this dataset (``x' = 127 - y``, ``y' = 127 - x``, ``p' = 1 - p``). Sensor
  128 x 128. The dataset has no official split: per class, the first 90 % of the files in
  name order train, the rest test (the paper's 9:1).

Integration into frames follows the paper's pipeline (spikingjelly ``split_by='number'``): a
sample's events, in time order, are cut into ``T`` slices of equal event count; DVS-CIFAR10
frames are 48 x 48 (each sensor pixel falls into the frame pixel ``x * 48 // 128``). Unlike
the paper, which resizes event *counts* bilinearly, a frame pixel is 1 when at least one event
of that polarity fell into it: binary frames, deployed as spikes (channel 0 ON, 1 OFF).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmh_deploy.errors import DataError, MissingFileError

#: Frames per sample and frame size of each dataset.
NMNIST = {"frames": 10, "sensor": (34, 34), "size": (34, 34)}
DVS_CIFAR10 = {"frames": 10, "sensor": (128, 128), "size": (48, 48)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FRACTION = 0.9

_AEDAT3_HEADER = np.dtype(
    [
        ("type", "<i2"),
        ("source", "<i2"),
        ("size", "<i4"),
        ("ts_offset", "<i4"),
        ("ts_overflow", "<i4"),
        ("capacity", "<i4"),
        ("number", "<i4"),
        ("valid", "<i4"),
    ]
)
_POLARITY_EVENT = 1


def read_nmnist_bin(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t, x, y, p)`` of one N-MNIST ``.bin`` file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of 5-byte N-MNIST events")
    ev = raw.reshape(-1, 5).astype(np.int64)
    x, y = ev[:, 0], ev[:, 1]
    p = ev[:, 2] >> 7
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    return t, x, y, p


def _header_end(data: bytes) -> tuple[bytes, int]:
    """The first header line and the offset of the first byte after the ``#`` lines."""
    offset, first = 0, b""
    while offset < len(data) and data[offset : offset + 1] == b"#":
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        if not first:
            first = data[offset:end].strip()
        offset = end
    return first, offset


def read_aedat(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t, x, y, p)`` of one DVS-CIFAR10 ``.aedat`` file (AEDAT 3.1 or jAER 2.0 DVS128)."""
    data = Path(path).read_bytes()
    version, offset = _header_end(data)
    if not version.startswith(b"#!AER-DAT"):
        raise DataError(f"{path}: not an AEDAT file (no '#!AER-DAT' header line)")
    if version == b"#!AER-DAT3.1":
        return _read_aedat31(path, data, offset)
    body = data[offset:]
    if len(body) % 8:
        raise DataError(f"{path}: AEDAT 2.0 body of {len(body)} bytes is not a whole number of 8-byte events")
    words = np.frombuffer(body, dtype=">u4").astype(np.int64)
    address, t = words[0::2], words[1::2]
    x, y, p = (address >> 1) & 0x7F, (address >> 8) & 0x7F, address & 1
    return t, 127 - y, 127 - x, 1 - p


def _read_aedat31(path: Path, data: bytes, offset: int):
    ts, xs, ys, ps = [], [], [], []
    while offset < len(data):
        if offset + _AEDAT3_HEADER.itemsize > len(data):
            raise DataError(f"{path}: truncated AEDAT 3.1 packet header at byte {offset}")
        head = np.frombuffer(data, _AEDAT3_HEADER, count=1, offset=offset)[0]
        offset += _AEDAT3_HEADER.itemsize
        size = int(head["size"]) * int(head["capacity"])
        if size < 0 or offset + size > len(data):
            raise DataError(f"{path}: AEDAT 3.1 packet at byte {offset} runs past the file end")
        if int(head["type"]) == _POLARITY_EVENT and int(head["number"]):
            events = np.frombuffer(
                data, dtype=[("data", "<u4"), ("t", "<i4")], count=int(head["number"]), offset=offset
            )
            word = events["data"].astype(np.int64)
            valid = (word & 1) == 1
            ts.append((events["t"].astype(np.int64) | (int(head["ts_overflow"]) << 31))[valid])
            xs.append(((word >> 17) & 0x7FFF)[valid])
            ys.append(((word >> 2) & 0x7FFF)[valid])
            ps.append(((word >> 1) & 1)[valid])
        offset += size
    if not ts:
        return (np.zeros(0, np.int64),) * 4
    return tuple(np.concatenate(v) for v in (ts, xs, ys, ps))


def integrate(
    events: tuple[np.ndarray, ...], frames: int, sensor: tuple[int, int], size: tuple[int, int], where: Path
) -> np.ndarray:
    """Binary frames ``(frames, 2, H, W)`` of one sample's ``(t, x, y, p)`` (see the docstring)."""
    t, x, y, p = events
    h_in, w_in = sensor
    if len(t) and (x.max() >= w_in or y.max() >= h_in or x.min() < 0 or y.min() < 0):
        raise DataError(f"{where}: event coordinates outside the {w_in}x{h_in} sensor")
    order = np.argsort(t, kind="stable")
    x, y, p = x[order], y[order], p[order]
    out = np.zeros((frames, 2, *size), np.uint8)
    n = len(order)
    slice_of = (np.arange(n) * frames) // max(n, 1)  # equal event counts per frame
    out[slice_of, 1 - p, y * size[0] // h_in, x * size[1] // w_in] = 1
    return out


def _read_files(files: list[Path], reader: Callable, spec: dict) -> np.ndarray:
    return np.stack(
        [integrate(reader(f), spec["frames"], spec["sensor"], spec["size"], f) for f in files]
    ).astype(np.float32)


def load_nmnist(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """N-MNIST from ``root/{Train,Test}/<digit>/*.bin`` as binary frames and labels."""
    layout = "<data_dir>/{Train,Test}/<0..9>/*.bin (the N-MNIST release, unzipped)"
    out = []
    for split in ("Train", "Test"):
        files, labels = [], []
        for digit in range(10):
            found = sorted((root / split / str(digit)).glob("*.bin"))
            files += found
            labels += [digit] * len(found)
        if not files:
            raise MissingFileError(
                f"dataset 'n-mnist': no .bin files under {root / split}; expected {layout}"
            )
        out.append((_read_files(files, read_nmnist_bin, NMNIST), np.array(labels)))
    return out[0], out[1]


def load_dvs_cifar10(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """DVS-CIFAR10 from ``root/<class>/*.aedat``, split 9:1 per class in file-name order."""
    layout = f"<data_dir>/{{{','.join(CIFAR10_CLASSES)}}}/*.aedat"
    train_files, train_y, test_files, test_y = [], [], [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        found = sorted((root / cls).glob("*.aedat"))
        if not found:
            raise MissingFileError(
                f"dataset 'dvs-cifar10': no .aedat files in {root / cls}; expected {layout}"
            )
        # 9:1, but a class with two or more files keeps at least one of each
        cut = max(1, min(len(found) - 1, int(TRAIN_FRACTION * len(found))))
        train_files += found[:cut]
        train_y += [label] * cut
        test_files += found[cut:]
        test_y += [label] * (len(found) - cut)
    if not test_files or not train_files:
        raise DataError(
            f"dataset 'dvs-cifar10': {root} has too few files per class for a 9:1 train/test split"
        )
    return (
        (_read_files(train_files, read_aedat, DVS_CIFAR10), np.array(train_y)),
        (_read_files(test_files, read_aedat, DVS_CIFAR10), np.array(test_y)),
    )
