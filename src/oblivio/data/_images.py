"""Image loaders: IDX files (``mnist``, ``fashion-mnist``) and CIFAR-10 batches (``cifar10``).

``read_idx`` reads an IDX file; ``read_cifar_batch`` reads a CIFAR "python version" batch
with a restricted unpickler. Images come out as float32 in [0, 1], shaped (n, channels,
height, width), with train ids ``0..n_train-1`` and test ids after them.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oblivio.data._registry import (
    _first_file,
    _not_found,
    _read_bytes,
    register_loader,
    search_folders,
)
from oblivio.data.dataset import Dataset, Split

# -- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw), as used by MNIST and Fashion-MNIST.

    Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte
    (0x08 = unsigned byte, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64),
    the number of dimensions, each dimension as a big-endian uint32, then the values in
    row-major order (big-endian).

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file (the message names the file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: corrupt IDX file: header says shape {dims} ({expected} bytes of data), "
            f"file has {len(raw) - header}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _idx_names(prefix: str, kind: str, rank: int) -> list[str]:
    stems = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    return [stem + ext for stem in stems for ext in (".gz", "")]


_IDX_PARTS = {
    "train-images": ("train", "images", 3),
    "train-labels": ("train", "labels", 1),
    "test-images": ("t10k", "images", 3),
    "test-labels": ("t10k", "labels", 1),
}


def _idx_files(folder: Path) -> dict[str, Path] | None:
    files = {}
    for part, (prefix, kind, rank) in _IDX_PARTS.items():
        found = _first_file(folder, _idx_names(prefix, kind, rank))
        if found is None:
            return None
        files[part] = found
    return files


def _images(pixels: np.ndarray, channels_last: bool = False) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] of shape (n, channels, height, width)."""
    images = np.divide(pixels, np.float32(255.0), dtype=np.float32)
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif channels_last:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images


def _image_split(
    name: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    classes: Sequence[Any],
    flatten: bool,
    source: Path,
) -> Split:
    """Train ids ``0..n_train-1``, test ids from ``n_train`` on: ids never clash."""
    parts = []
    offset = 0
    for suffix, X, y in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        y = np.asarray(y).astype(np.int64).ravel()
        if len(X) != len(y):
            raise ValueError(
                f"{name}: {suffix} split under {source} has {len(X)} images but {len(y)} labels"
            )
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(
                f"{name}: {suffix} labels under {source} must lie in 0..{len(classes) - 1}, "
                f"got values from {y.min()} to {y.max()}"
            )
        if flatten:
            X = X.reshape(len(X), -1)
        ids = offset + np.arange(len(y), dtype=np.int64)
        offset += len(y)
        parts.append(Dataset(X, y, ids, None, tuple(classes), f"{name}-{suffix}"))
    return Split(*parts)


def _load_idx_dataset(
    name: str,
    root: Path | None,
    defaults: Sequence[str],
    classes: Sequence[Any],
    how: str,
    flatten: bool,
) -> Split:
    looked = search_folders(name, root, defaults)
    for folder in looked:
        files = _idx_files(folder)
        if files is not None:
            arrays = {part: read_idx(path) for part, path in files.items()}
            return _image_split(
                name,
                _images(arrays["train-images"]),
                arrays["train-labels"],
                _images(arrays["test-images"]),
                arrays["test-labels"],
                classes,
                flatten,
                folder,
            )
    wanted = (
        "the 4 IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; gzip '.gz' or raw)"
    )
    raise _not_found(name, wanted, looked, how)


FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_DEFAULT = "/usr/share/datasets/fashion-mnist"


def _idx_present(name: str, defaults: Sequence[str]) -> Callable[[Path | None], bool]:
    return lambda root: any(_idx_files(f) for f in search_folders(name, root, defaults))


@register_loader(
    "fashion-mnist",
    "Zalando Fashion-MNIST, 60,000 + 10,000 images 28x28, 10 classes "
    "(Debian package dataset-fashion-mnist)",
    is_present=_idx_present("fashion-mnist", [_FASHION_DEFAULT]),
)
def _load_fashion_mnist(root: Path | None, seed: int | None, flatten: bool = False) -> Split:
    """Fashion-MNIST (Xiao et al., 2017) from its IDX files.

    ``X`` is float32 in [0, 1] of shape (n, 1, 28, 28), or (n, 784) with ``flatten=True``.
    Train ids are 0..59,999 and test ids 60,000..69,999. Looks in ``root`` (or
    ``$OBLIVIO_DATA/fashion-mnist``) and then ``/usr/share/datasets/fashion-mnist``.
    """
    return _load_idx_dataset(
        "fashion-mnist",
        root,
        [_FASHION_DEFAULT],
        FASHION_MNIST_CLASSES,
        "Install them with: apt-get install dataset-fashion-mnist (puts them in "
        f"{_FASHION_DEFAULT}); without root: apt-get download dataset-fashion-mnist && "
        "dpkg -x dataset-fashion-mnist_*.deb DIR, then root=DIR/usr/share/datasets/fashion-mnist.",
        flatten,
    )


@register_loader(
    "mnist",
    "MNIST handwritten digits from the 4 IDX files (user-supplied)",
    is_present=_idx_present("mnist", []),
)
def _load_mnist(root: Path | None, seed: int | None, flatten: bool = False) -> Split:
    """MNIST (LeCun et al., 1998) from user-supplied IDX files, same layout as Fashion-MNIST."""
    return _load_idx_dataset(
        "mnist",
        root,
        [],
        tuple(range(10)),
        "MNIST ships with no system package here: copy the 4 original IDX files "
        "(train-images-idx3-ubyte.gz, ...) into one of these folders.",
        flatten,
    )


# -- CIFAR-10 -------------------------------------------------------------------------------
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_PY = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
_CIFAR_BIN = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _numpy_global(name: str) -> Any:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes with protocol 2, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin1")


def _plain_bytes(*args: Any) -> bytes:
    """``bytes()`` as pickled for b'' — no size argument (it could allocate without bound)."""
    if args and not isinstance(args[0], (bytes, str)):
        raise pickle.UnpicklingError(f"refusing bytes({type(args[0]).__name__})")
    return bytes(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only plain containers and numpy arrays.

    Pickle can run arbitrary code; this one resolves no global except numpy's array
    reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``), latin-1
    ``_codecs.encode`` and the builtins ``dict``, ``list``, ``str``, ``int`` and ``bytes``
    (without a size argument). Anything else raises ``pickle.UnpicklingError``.
    """

    _NUMPY = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
        ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
        ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
        ("_codecs", "encode"): lambda: _latin1_encode,
    }
    _BUILTINS = {"dict": dict, "list": list, "str": str, "int": int, "bytes": _plain_bytes}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._NUMPY:
            return self._NUMPY[(module, name)]()
        if module in ("builtins", "__builtin__") and name in self._BUILTINS:
            return self._BUILTINS[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not allowed in CIFAR data")


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Read one CIFAR "python version" batch with a restricted unpickler.

    The batches (Krizhevsky, 2009) are pickled dicts (Python 2, so keys may come back as
    bytes: they are decoded) with ``data`` (n x 3,072 uint8: the red, green and blue
    32 x 32 planes) and ``labels``; ``batches.meta`` holds ``label_names``.

    Raises
    ------
    ValueError
        If the file is not such a pickle or asks for anything beyond containers and arrays.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            content = _RestrictedUnpickler(io.BytesIO(handle.read()), encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        AttributeError,
        ValueError,
        KeyError,
        IndexError,
    ) as error:
        raise ValueError(f"{path}: not a CIFAR python batch ({error})") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _cifar_python(folder: Path) -> tuple[np.ndarray, ...]:
    parts = []
    for file_name in _CIFAR_PY:
        batch = read_cifar_batch(folder / file_name)
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"{folder / file_name}: batch lacks 'data' or 'labels' entries")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(
                f"{folder / file_name}: 'data' must be uint8 of shape (n, 3072), "
                f"got {data.dtype} {data.shape}"
            )
        parts.append((data, np.asarray(batch["labels"], dtype=np.int64)))
    train_X = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return train_X, train_y, parts[-1][0], parts[-1][1]


def _cifar_binary(folder: Path) -> tuple[np.ndarray, ...]:
    parts = []
    for file_name in _CIFAR_BIN:
        raw = np.frombuffer(_read_bytes(folder / file_name), dtype=np.uint8)
        if raw.size % 3073:
            raise ValueError(
                f"{folder / file_name}: size {raw.size} is not a multiple of 3,073-byte records"
            )
        records = raw.reshape(-1, 3073)
        parts.append((records[:, 1:], records[:, 0].astype(np.int64)))
    train_X = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    return train_X, train_y, parts[-1][0], parts[-1][1]


def _cifar_classes(folder: Path) -> tuple[Any, ...]:
    if (folder / "batches.meta").is_file():
        names = read_cifar_batch(folder / "batches.meta").get("label_names")
        if names:
            return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    if (folder / "batches.meta.txt").is_file():
        names = [line.strip() for line in (folder / "batches.meta.txt").read_text().splitlines()]
        names = [n for n in names if n]
        if names:
            return tuple(names)
    return CIFAR10_CLASSES


def _cifar_folder(root: Path | None) -> tuple[Path | None, str, list[Path]]:
    looked = search_folders(
        "cifar10", root, subfolders=("cifar-10-batches-py", "cifar-10-batches-bin")
    )
    for folder in looked:
        if all((folder / f).is_file() for f in _CIFAR_PY):
            return folder, "python", looked
        if all((folder / f).is_file() for f in _CIFAR_BIN):
            return folder, "binary", looked
    return None, "", looked


@register_loader(
    "cifar10",
    "CIFAR-10, 50,000 + 10,000 colour images 32x32 (user-supplied python or binary batches)",
    is_present=lambda root: _cifar_folder(root)[0] is not None,
)
def _load_cifar10(root: Path | None, seed: int | None, flatten: bool = False) -> Split:
    """CIFAR-10 (Krizhevsky, 2009) from the "python version" batches or the binary version.

    Reads ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (class names from
    ``batches.meta``) with a restricted unpickler that builds nothing but dicts, lists,
    strings, ints and numpy arrays; or ``data_batch_*.bin`` / ``test_batch.bin`` (records
    of one label byte and 3,072 pixel bytes). Looks in ``root``, ``root/cifar-10-batches-py``
    and ``root/cifar-10-batches-bin`` (or the same under ``$OBLIVIO_DATA``).
    ``X`` is float32 in [0, 1] of shape (n, 3, 32, 32), or (n, 3072) with ``flatten=True``;
    train ids are 0..49,999 and test ids from 50,000.
    """
    folder, kind, looked = _cifar_folder(root)
    if folder is None:
        raise _not_found(
            "cifar10",
            "the batches data_batch_1..data_batch_5 and test_batch (python version, with "
            "batches.meta) or data_batch_1.bin..test_batch.bin (binary version)",
            looked,
            "Get 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into one of these "
            "folders (only load pickles from a source you trust).",
        )
    train_X, train_y, test_X, test_y = (
        _cifar_python(folder) if kind == "python" else _cifar_binary(folder)
    )
    return _image_split(
        "cifar10",
        _images(train_X.reshape(-1, 3, 32, 32)),
        train_y,
        _images(test_X.reshape(-1, 3, 32, 32)),
        test_y,
        _cifar_classes(folder),
        flatten,
        folder,
    )
