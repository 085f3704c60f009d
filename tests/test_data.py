"""Data loaders: IDX parsing against hand-built files, the bundled MNIST, user files."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest

from ringfl.data import (
    BUNDLED_MNIST,
    DataError,
    Dataset,
    load_data_file,
    load_digits,
    load_mnist,
    parse_idx,
    read_idx,
)
from ringfl.errors import RingflError


def idx_bytes(arr: np.ndarray, type_byte: int) -> bytes:
    head = bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.tobytes()


@pytest.mark.parametrize(
    "dtype,type_byte", [(np.uint8, 0x08), (">i2", 0x0B), (">i4", 0x0C), (">f4", 0x0D)]
)
def test_idx_roundtrip(tmp_path, dtype, type_byte):
    arr = (np.arange(2 * 3 * 5) - 7).astype(np.int64)
    if np.dtype(dtype) == np.uint8:
        arr = np.arange(30)
    arr = arr.astype(dtype).reshape(2, 3, 5)
    raw = idx_bytes(arr, type_byte)
    got = parse_idx(raw)
    np.testing.assert_array_equal(got, arr)
    assert got.dtype.isnative
    p = tmp_path / "a.idx.gz"
    p.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(p), arr)


def test_idx_rejects_malformed():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    good = idx_bytes(arr, 0x08)
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x01" + good[1:], "f.idx")
    with pytest.raises(DataError, match="type byte 0x07"):
        parse_idx(good[:2] + b"\x07" + good[3:], "f.idx")
    with pytest.raises(DataError, match="f.idx: IDX data is 11 bytes"):
        parse_idx(good[:-1], "f.idx")
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(good[:6], "f.idx")


def test_read_idx_checksum_and_corrupt_gzip(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    raw = idx_bytes(arr, 0x08)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(raw))
    import hashlib

    assert read_idx(p, hashlib.sha256(raw).hexdigest()).tolist() == list(range(6))
    with pytest.raises(DataError, match="SHA-256"):
        read_idx(p, "0" * 64)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(bad)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing.gz")


def test_bundled_mnist_loads_and_verifies():
    train, test = load_mnist()
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    # canonical class counts of the MNIST test set
    assert np.bincount(test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(train.x.mean())) < 1e-3 and abs(float(train.x.std()) - 1.0) < 1e-2


def test_standardize_mnist_is_the_float_formula_bit_for_bit():
    """The lookup table gives what (x / 255 − mean) / std in float32 gives, for every
    pixel value and for the bundled images (raw, standardized per part = load_mnist)."""
    from ringfl.data.builtin import MNIST_MEAN, MNIST_STD, standardize_mnist

    def formula(u8):
        x = u8.astype(np.float32)
        x *= np.float32(1.0 / 255.0)
        x -= np.float32(MNIST_MEAN)
        x /= np.float32(MNIST_STD)
        return x

    every = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    got = standardize_mnist(Dataset(every, np.zeros(256, np.int64), 10, "all")).x
    assert (
        got.dtype == np.float32
        and got.view(np.uint32).tolist() == formula(every).view(np.uint32).tolist()
    )
    raw, _ = load_mnist(raw=True)
    part = raw.subset(np.arange(0, 60000, 7), "part")
    assert np.array_equal(
        standardize_mnist(part).x.view(np.uint32), formula(part.x).view(np.uint32)
    )
    with pytest.raises(DataError, match="uint8"):
        standardize_mnist(Dataset(got, np.zeros(256, np.int64), 10, "floats"))


def test_user_mnist_dir_raw_and_corrupt(tmp_path):
    # a user directory with uncompressed files in the other common spelling
    for f in BUNDLED_MNIST.glob("t10k-*.gz"):
        name = f.name.removesuffix(".gz").replace(".idx", "-idx")
        (tmp_path / name).write_bytes(gzip.decompress(f.read_bytes()))
    with pytest.raises(DataError, match="no train-images"):
        load_mnist(tmp_path)
    for f in BUNDLED_MNIST.glob("train-*.gz"):
        shutil.copy(f, tmp_path / f.name)
    train, test = load_mnist(tmp_path)
    assert len(train) == 60000 and len(test) == 10000
    # flip one byte in the test labels: checksum catches it, verify=False does not care
    p = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(p.read_bytes())
    raw[100] = (raw[100] + 1) % 10
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: SHA-256"):
        load_mnist(tmp_path)
    assert len(load_mnist(tmp_path, verify=False)[1]) == 10000


def test_digits_split_is_seeded():
    a_train, a_test = load_digits(seed=3)
    b_train, _ = load_digits(seed=3)
    c_train, _ = load_digits(seed=4)
    assert a_train.x.shape[1:] == (1, 8, 8) and len(a_train) + len(a_test) == 1797
    np.testing.assert_array_equal(a_train.y, b_train.y)
    assert not np.array_equal(a_train.y, c_train.y)
    assert a_train.x.min() >= 0.0 and a_train.x.max() <= 1.0


def test_npz_npy_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 4, 4), dtype=np.uint8)
    y = np.array([0, 1, 2, 2, 1, 0, 3])
    np.savez(tmp_path / "p.npz", x=x, y=y)
    d = load_data_file(tmp_path / "p.npz")
    assert d.x.shape == (7, 1, 4, 4) and d.num_classes == 4
    np.testing.assert_allclose(d.x[:, 0], x / 255.0, rtol=1e-6)

    xf = rng.normal(size=(5, 3))
    np.save(tmp_path / "peer_x.npy", xf)
    np.save(tmp_path / "peer_y.npy", np.array([1.0, 0.0, 1.0, 1.0, 0.0]))
    d = load_data_file(tmp_path / "peer_x.npy", num_classes=3)
    np.testing.assert_allclose(d.x, xf.astype(np.float32))
    assert d.y.tolist() == [1, 0, 1, 1, 0] and d.num_classes == 3
    d2 = load_data_file((tmp_path / "peer_x.npy", tmp_path / "peer_y.npy"))
    np.testing.assert_array_equal(d2.y, d.y)

    (tmp_path / "a.csv").write_text("f1,label,f2\n1.5,1,2\n3,0,4.25\n")
    d = load_data_file(tmp_path / "a.csv", label_column="label")
    assert d.x.tolist() == [[1.5, 2.0], [3.0, 4.25]] and d.y.tolist() == [1, 0]
    (tmp_path / "b.csv").write_text("1,2,0\n3,4,1\n5,6,1\n")
    d = load_data_file(tmp_path / "b.csv")
    assert d.x.shape == (3, 2) and d.y.tolist() == [0, 1, 1]
    d = load_data_file(tmp_path / "b.csv", label_column=0)
    assert d.y.tolist() == [1, 3, 5]


def test_user_file_errors_name_the_file(tmp_path):
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"nolabels.npz: .npz needs arrays 'x' and 'y'"):
        load_data_file(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match="len.npz: x has 3 samples but y has 4"):
        load_data_file(tmp_path / "len.npz")
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 2)), y=np.array([0, -1]))
    with pytest.raises(DataError, match="neg.npz: labels must be >= 0"):
        load_data_file(tmp_path / "neg.npz")
    np.savez(tmp_path / "frac.npz", x=np.zeros((2, 2)), y=np.array([0.5, 1]))
    with pytest.raises(DataError, match="frac.npz: labels must be integers"):
        load_data_file(tmp_path / "frac.npz")
    np.savez(tmp_path / "nan.npz", x=np.array([[np.nan, 1.0]]), y=np.array([0]))
    with pytest.raises(DataError, match="nan.npz: x contains NaN"):
        load_data_file(tmp_path / "nan.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 2, dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="obj.npz"):
        load_data_file(tmp_path / "obj.npz")
    np.save(tmp_path / "lonely.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match="lonely.npy: a .npy feature file must be named"):
        load_data_file(tmp_path / "lonely.npy")
    np.save(tmp_path / "q_x.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match="q_y.npy: file not found"):
        load_data_file(tmp_path / "q_x.npy")
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    with pytest.raises(DataError, match="ragged.csv: row 2 has 2 columns, expected 3"):
        load_data_file(tmp_path / "ragged.csv")
    (tmp_path / "text.csv").write_text("a,b,c\n1,x,0\n")
    with pytest.raises(DataError, match="text.csv: row 2 has a non-numeric value"):
        load_data_file(tmp_path / "text.csv")
    (tmp_path / "nolab.csv").write_text("a,b\n1,0\n")
    with pytest.raises(DataError, match="nolab.csv: no column named 'label'"):
        load_data_file(tmp_path / "nolab.csv", label_column="label")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match=r"d.txt: unknown data format '.txt'"):
        load_data_file(tmp_path / "d.txt")
    with pytest.raises(DataError, match="absent.npz: file not found"):
        load_data_file(tmp_path / "absent.npz")
    assert issubclass(DataError, RingflError)


def test_dataset_subset_and_concat():
    d = Dataset(np.arange(12, dtype=np.float32).reshape(6, 2), np.array([0, 1, 0, 1, 2, 2]), 3)
    s = d.subset(np.array([5, 0]))
    assert s.y.tolist() == [2, 0] and s.x[0].tolist() == [10.0, 11.0]
    c = Dataset.concat([s, d])
    assert len(c) == 8 and c.input_shape == (2,)
    with pytest.raises(DataError, match="labels must lie in"):
        Dataset(np.zeros((2, 2), np.float32), np.array([0, 3]), 3)
