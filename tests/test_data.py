"""Tests for models.data: bundled datasets, CIFAR pickles, event folders, loaders."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.models.data import (
    SUPPORTED_DATASETS,
    DatasetSpec,
    UnsafePickleError,
    load_dataset,
    make_loaders,
)

# --------------------------------------------------------------------------- digits / mnist


def test_digits_shapes_range_and_spec() -> None:
    train, test, spec = load_dataset("digits")
    assert spec == DatasetSpec("digits", (1, 8, 8), 10, timesteps=None)
    assert len(train) + len(test) == 1797
    assert len(test) == pytest.approx(0.2 * 1797, abs=1)
    x, y = train.tensors
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert x.min() >= 0 and x.max() == 1.0  # 16/16 occurs in the data
    # Values are the 0..16 counts divided by 16.
    assert torch.equal(x * 16, torch.round(x * 16))


def test_digits_split_is_deterministic_and_stratified() -> None:
    a_train, a_test, _ = load_dataset("digits", seed=3)
    b_train, b_test, _ = load_dataset("digits", seed=3)
    c_train, _, _ = load_dataset("digits", seed=4)
    assert torch.equal(a_train.tensors[0], b_train.tensors[0])
    assert torch.equal(a_test.tensors[1], b_test.tensors[1])
    assert not torch.equal(a_train.tensors[0], c_train.tensors[0])
    # Stratified: every class keeps (about) the overall test share.
    train_counts = torch.bincount(a_train.tensors[1], minlength=10)
    test_counts = torch.bincount(a_test.tensors[1], minlength=10)
    share = test_counts.double() / (train_counts + test_counts).double()
    assert torch.all((share - 0.2).abs() < 0.02), share


def test_digits_test_fraction_is_validated() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.5)


def test_mnist5k_shapes_and_range() -> None:
    train, test, spec = load_dataset("mnist5k", test_fraction=0.1)
    assert spec == DatasetSpec("mnist5k", (1, 28, 28), 10)
    assert (len(train), len(test)) == (4500, 500)
    x, y = test.tensors
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 50))


# --------------------------------------------------------------------------- CIFAR


def _write_pickle(path: Path, obj: object, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, num_classes: int) -> dict[bytes, object]:
    """A batch in the released format: bytes keys, (N, 3072) uint8, list of int labels."""
    return {
        b"batch_label": b"fake",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"filenames": [b"x.png"] * n,
    }


def _fake_cifar10(root: Path, protocol: int = 2) -> dict[str, dict[bytes, object]]:
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _cifar_batch(rng, 4, b"labels", 10) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(rng, 3, b"labels", 10)
    for name, batch in batches.items():
        _write_pickle(root / "cifar-10-batches-py" / name, batch, protocol)
    return batches


# Protocol 2 is what the released files use (Python 2 writes numpy via
# _reconstruct); Python 3 at protocol 2 adds _codecs.encode for bytes, and
# protocol 5 makes numpy use _frombuffer: all three paths must load.
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_from_fake_folder(tmp_path: Path, protocol: int) -> None:
    batches = _fake_cifar10(tmp_path, protocol)
    train, test, spec = load_dataset("cifar10", tmp_path)
    assert spec == DatasetSpec("cifar10", (3, 32, 32), 10)
    assert train.tensors[0].shape == (20, 3, 32, 32) and test.tensors[0].shape == (3, 3, 32, 32)
    assert train.tensors[0].dtype == torch.float32 and train.tensors[1].dtype == torch.int64
    expected_y = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert train.tensors[1].tolist() == expected_y
    assert test.tensors[1].tolist() == batches["test_batch"][b"labels"]
    # Channel-first reshape of the R, G, B planes, scaled by 1/255.
    raw = batches["data_batch_2"][b"data"]
    np.testing.assert_allclose(
        train.tensors[0][4:8].numpy(), raw.reshape(4, 3, 32, 32).astype(np.float32) / 255, rtol=1e-6
    )
    red_pixel_0 = raw[0, 0] / 255
    assert train.tensors[0][4, 0, 0, 0].item() == pytest.approx(red_pixel_0)
    assert train.tensors[0][4, 2, 31, 31].item() == pytest.approx(raw[0, 3071] / 255)


def test_cifar100_from_fake_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train_b = _cifar_batch(rng, 4, b"fine_labels", 100)
    train_b[b"coarse_labels"] = [0] * 4
    test_b = _cifar_batch(rng, 2, b"fine_labels", 100)
    train_b[b"fine_labels"][0] = 99  # top label is accepted
    _write_pickle(tmp_path / "cifar-100-python" / "train", train_b, 2)
    _write_pickle(tmp_path / "cifar-100-python" / "test", test_b, 2)
    train, test, spec = load_dataset("cifar100", str(tmp_path))
    assert spec == DatasetSpec("cifar100", (3, 32, 32), 100)
    assert train.tensors[0].shape == (4, 3, 32, 32) and test.tensors[0].shape == (2, 3, 32, 32)
    assert train.tensors[1].tolist() == train_b[b"fine_labels"]
    np.testing.assert_allclose(
        test.tensors[0].numpy().reshape(2, -1), test_b[b"data"].astype(np.float32) / 255, rtol=1e-6
    )


class _RunsShell:
    """Unpickling this calls os.system, the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def test_malicious_cifar_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    _write_pickle(evil, {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}, 2)
    # Sanity: plain pickle really would run the command.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {probe}")))
    assert probe.exists()

    with pytest.raises(UnsafePickleError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert str(evil) in message and ".system'" in message
    assert not marker.exists()
    assert isinstance(info.value, pickle.UnpicklingError)


def test_codecs_global_only_allows_latin1(tmp_path: Path) -> None:
    """_codecs.encode is allowed for protocol-2 bytes, but not with other codecs."""
    _fake_cifar10(tmp_path)
    # Hand-written protocol-2 pickle: _codecs.encode('x', 'rot13').
    payload = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_dataset("cifar10", tmp_path)


def test_cifar_object_array_is_rejected(tmp_path: Path) -> None:
    """numpy.dtype is allowed, so an object array gets through the unpickler; refuse it after."""
    _fake_cifar10(tmp_path)
    data = np.empty((1, 3072), dtype=object)
    data[:] = 0
    _write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": data, b"labels": [0]}, 2)
    with pytest.raises(ValueError, match="uint8"):
        load_dataset("cifar10", tmp_path)


def test_cifar_missing_batch_names_path(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    missing.unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", tmp_path)
    assert str(missing) in str(info.value) and "cifar-10-batches-py" in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "events"])
def test_missing_data_dir_names_path_and_layout(tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, missing)
    assert str(missing) in str(info.value) and "laid out as" in str(info.value)
    with pytest.raises(FileNotFoundError, match="needs data_dir"):
        load_dataset(name)


def test_cifar_folder_missing_inside_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar100", tmp_path)
    assert str(tmp_path / "cifar-100-python" / "train") in str(info.value)


# --------------------------------------------------------------------------- events


def _write_events(
    root: Path, spec: dict[str, dict[str, int]], shape=(5, 2, 4, 4), seed: int = 0
) -> dict[tuple[str, str], list[np.ndarray]]:
    """Write ``spec[split][class] = count`` binary frame files; return them by (split, class)."""
    rng = np.random.default_rng(seed)
    written: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, classes in spec.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                frames = (rng.random(shape) < 0.3).astype(np.uint8)
                np.save(folder / f"s{i}.npy", frames)
                written.setdefault((split, cls), []).append(frames)
    return written


def test_events_from_fake_folder(tmp_path: Path) -> None:
    written = _write_events(
        tmp_path, {"train": {"walk": 2, "clap": 3, "wave": 1}, "test": {"clap": 1, "wave": 2}}
    )
    train, test, spec = load_dataset("events", tmp_path)
    # binary frames: deployed, they are sent as spikes
    assert spec == DatasetSpec("events", (2, 4, 4), 3, timesteps=5, spikes=True)
    x, y = train.tensors
    assert x.shape == (6, 5, 2, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Sorted class names: clap=0, walk=1, wave=2, files in name order within a class.
    assert y.tolist() == [0, 0, 0, 1, 1, 2]
    assert test.tensors[1].tolist() == [0, 2, 2]
    np.testing.assert_array_equal(x[3].numpy(), written[("train", "walk")][0])
    np.testing.assert_array_equal(test.tensors[0][2].numpy(), written[("test", "wave")][1])


def test_events_mismatched_frame_shape_names_file(tmp_path: Path) -> None:
    _write_events(tmp_path, {"train": {"a": 2}, "test": {"a": 1}})
    odd = tmp_path / "test" / "a" / "s0.npy"
    np.save(odd, np.zeros((6, 2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="all samples must match") as info:
        load_dataset("events", tmp_path)
    assert str(odd) in str(info.value)


def test_events_rejects_pickled_npy(tmp_path: Path) -> None:
    _write_events(tmp_path, {"train": {"a": 1}, "test": {"a": 1}})
    marker = tmp_path / "pwned"
    path = tmp_path / "train" / "a" / "s1.npy"
    np.save(path, np.array([_RunsShell(f"touch {marker}")], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle") as info:
        load_dataset("events", tmp_path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4)), np.full((5, 2, 4, 4), 3.0)])
def test_events_rejects_wrong_rank_or_range(tmp_path: Path, bad: np.ndarray) -> None:
    _write_events(tmp_path, {"train": {"a": 1}, "test": {"a": 1}})
    path = tmp_path / "train" / "a" / "s0.npy"
    np.save(path, bad)
    with pytest.raises(ValueError) as info:
        load_dataset("events", tmp_path)
    assert str(path) in str(info.value)


def test_events_missing_split_and_unknown_test_class(tmp_path: Path) -> None:
    _write_events(tmp_path, {"train": {"a": 1}})
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("events", tmp_path)
    assert str(tmp_path / "test") in str(info.value)
    _write_events(tmp_path, {"test": {"a": 1, "zzz": 1}})
    with pytest.raises(ValueError, match="zzz"):
        load_dataset("events", tmp_path)


def test_events_empty_split_is_file_not_found(tmp_path: Path) -> None:
    _write_events(tmp_path, {"train": {"a": 1}})
    (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError, match="no .npy files"):
        load_dataset("events", tmp_path)


# --------------------------------------------------------------------------- misc


def test_unknown_dataset_lists_supported() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in SUPPORTED_DATASETS:
        assert name in str(info.value)


def test_make_loaders_seeded_shuffle() -> None:
    train, test, _ = load_dataset("digits")
    order = []
    for _ in range(2):
        train_loader, test_loader = make_loaders(train, test, batch_size=32, seed=7)
        order.append(torch.cat([y for _, y in train_loader]))
    assert torch.equal(order[0], order[1])
    assert len(order[0]) == len(train)
    assert not torch.equal(order[0], train.tensors[1])  # actually shuffled
    other, _ = make_loaders(train, test, batch_size=32, seed=8)
    assert not torch.equal(torch.cat([y for _, y in other]), order[0])
    x, y = next(iter(test_loader))
    assert x.shape == (32, 1, 8, 8)
    assert torch.equal(y, test.tensors[1][:32])  # test order is kept
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders(train, test, batch_size=0)
