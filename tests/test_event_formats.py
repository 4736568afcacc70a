"""N-MNIST (.bin) and DVS-CIFAR10 (.aedat, AEDAT 3.1 and jAER 2.0) read from tiny files written
here in each format, integrated into binary frames by event count as the paper does."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from lmh_deploy.models import event_formats as F
from lmh_deploy.models.data import DatasetSpec, load_dataset


def _nmnist_file(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """(t, x, y, p) -> 5-byte big-endian records: x, y, p<<7 | t>>16, t>>8, t."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    for t, x, y, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    path.write_bytes(bytes(out))


def _aedat31_file(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
    # an IMU packet (type 3) first: skipped
    out += struct.pack("<hhiiiiii", 3, 1, 8, 4, 0, 1, 1, 1) + b"\0" * 8
    records = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | 1, t) for t, x, y, p in events)
    n = len(events)
    out += struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n) + records
    path.write_bytes(bytes(out))


def _aedat20_file(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """jAER DVS128: big-endian (address, timestamp), polarity bit 0, x bits 1-7, y 8-14."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n")
    for t, x, y, p in events:
        out += struct.pack(">II", (y << 8) | (x << 1) | p, t)
    path.write_bytes(bytes(out))


def test_nmnist_bin_fields_and_frames(tmp_path: Path) -> None:
    events = [(5, 3, 4, 1), (70000, 33, 0, 0), (8_000_000, 10, 20, 1)]
    _nmnist_file(tmp_path / "a.bin", events)
    t, x, y, p = F.read_nmnist_bin(tmp_path / "a.bin")
    assert t.tolist() == [5, 70000, 8_000_000] and x.tolist() == [3, 33, 10]
    assert y.tolist() == [4, 0, 20] and p.tolist() == [1, 0, 1]
    frames = F.integrate((t, x, y, p), 3, (34, 34), (34, 34), tmp_path)
    # one event per frame (equal counts); ON -> channel 0, OFF -> channel 1
    assert frames.sum() == 3 and frames[0, 0, 4, 3] and frames[1, 1, 0, 33] and frames[2, 0, 20, 10]


def test_aedat_31_and_20_give_the_same_events(tmp_path: Path) -> None:
    events = [(10, 127, 0, 1), (20, 5, 64, 0), (30, 64, 127, 1)]
    _aedat31_file(tmp_path / "v3.aedat", events)
    t, x, y, p = F.read_aedat(tmp_path / "v3.aedat")
    assert list(zip(t, x, y, p)) == events
    # the 2.0 file holds the sensor's raw DVS128 address; the reader orients it as tonic and
    # spikingjelly do: x' = 127 - y, y' = 127 - x, p' = 1 - p
    _aedat20_file(tmp_path / "v2.aedat", [(t0, 127 - y0, 127 - x0, 1 - p0) for t0, x0, y0, p0 in events])
    assert list(zip(*F.read_aedat(tmp_path / "v2.aedat"))) == events
    frames = F.integrate(F.read_aedat(tmp_path / "v3.aedat"), 3, (128, 128), (48, 48), tmp_path)
    # 48x48 frames: sensor pixel x lands in x * 48 // 128
    assert frames[0, 0, 0, 47] and frames[1, 1, 24, 1] and frames[2, 0, 47, 24]


def test_load_n_mnist_and_dvs_cifar10_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def random_events(n: int, side: int) -> list[tuple[int, int, int, int]]:
        return [
            (int(i * 100), int(rng.integers(side)), int(rng.integers(side)), int(rng.integers(2)))
            for i in range(n)
        ]

    for split, count in (("Train", 2), ("Test", 1)):
        for digit in range(10):
            for i in range(count):
                _nmnist_file(tmp_path / "nm" / split / str(digit) / f"{i:05d}.bin", random_events(40, 34))
    train, test, spec = load_dataset("n-mnist", tmp_path / "nm")
    assert spec == DatasetSpec("n-mnist", (2, 34, 34), 10, timesteps=10, spikes=True)
    assert train.tensors[0].shape == (20, 10, 2, 34, 34) and len(test) == 10
    assert set(np.unique(train.tensors[0].numpy())) <= {0.0, 1.0}
    assert train.tensors[1].tolist() == [d for d in range(10) for _ in range(2)]

    for cls in F.CIFAR10_CLASSES:
        for i in range(3):
            write = _aedat31_file if i % 2 else _aedat20_file
            write(tmp_path / "dc" / cls / f"cifar10_{cls}_{i}.aedat", random_events(60, 128))
    train, test, spec = load_dataset("dvs-cifar10", tmp_path / "dc")
    assert spec == DatasetSpec("dvs-cifar10", (2, 48, 48), 10, timesteps=10, spikes=True)
    assert len(train) == 20 and len(test) == 10  # per class 2 train, 1 test (9:1 of 3 files)
    assert test.tensors[1].tolist() == list(range(10))


def test_event_format_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.bin").write_bytes(b"\0" * 7)
    with pytest.raises(ValueError, match=r"bad.bin: 7 bytes is not a whole number"):
        F.read_nmnist_bin(tmp_path / "bad.bin")
    (tmp_path / "x.aedat").write_bytes(b"hello")
    with pytest.raises(ValueError, match=r"x.aedat: not an AEDAT file"):
        F.read_aedat(tmp_path / "x.aedat")
    _aedat31_file(tmp_path / "far.aedat", [(1, 300, 2, 1)])
    with pytest.raises(ValueError, match="far.aedat: event coordinates outside the 128x128"):
        F.integrate(F.read_aedat(tmp_path / "far.aedat"), 2, (128, 128), (48, 48), tmp_path / "far.aedat")
    with pytest.raises(FileNotFoundError, match="dataset 'dvs-cifar10': no .aedat files"):
        load_dataset("dvs-cifar10", tmp_path)
