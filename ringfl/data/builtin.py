"""Built-in datasets, available offline: MNIST (bundled) and scikit-learn's digits.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(http://yann.lecun.com/exdb/mnist/), distributed under CC BY-SA 3.0. ringfl ships an
unmodified, gzipped copy of the four original IDX files in `ringfl/data/mnist/` and checks
their SHA-256 on every load. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ringfl.data.dataset import Dataset
from ringfl.data.errors import DataError
from ringfl.data.idx import read_idx

BUNDLED_MNIST = Path(__file__).resolve().parent / "mnist"

# SHA-256 of the canonical *uncompressed* MNIST files.
MNIST_SHA256 = {
    "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_IDX_RANK = {"images": 3, "labels": 1}

# Per-pixel mean and standard deviation of the MNIST training images scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def _find_idx(directory: Path, stem: str) -> Path:
    """The file for `stem` (e.g. "train-images") in `directory`, accepting the usual
    spellings: train-images.idx3-ubyte, train-images-idx3-ubyte, each with or without .gz."""
    rank = _IDX_RANK[stem.split("-")[1]]
    names = [f"{stem}{sep}idx{rank}-ubyte{gz}" for sep in (".", "-") for gz in (".gz", "")]
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"{directory}: no {stem} IDX file (looked for {', '.join(names)})")


def load_mnist(
    directory: str | Path | None = None, *, verify: bool = True, raw: bool = False
) -> tuple[Dataset, Dataset]:
    """(train, test) MNIST: x float32 (n, 1, 28, 28), standardized with the MNIST training
    mean/std; y int64. `directory`: the bundled copy when None, else a directory holding the
    four IDX files (gzipped or not). `verify`: check the canonical SHA-256 of each file
    (pass False to read another dataset in MNIST's layout, e.g. Fashion-MNIST). `raw`: x
    stays uint8 pixels (a quarter of the memory) for `standardize_mnist` to convert a
    subset at a time."""
    directory = BUNDLED_MNIST if directory is None else Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: MNIST directory not found")
    out = []
    for split in ("train", "t10k"):
        images_path = _find_idx(directory, f"{split}-images")
        labels_path = _find_idx(directory, f"{split}-labels")
        images = read_idx(images_path, MNIST_SHA256[f"{split}-images"] if verify else None)
        labels = read_idx(labels_path, MNIST_SHA256[f"{split}-labels"] if verify else None)
        if images.ndim != 3:
            raise DataError(f"{images_path}: expected 3 dimensions (n, h, w), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}"
            )
        y = labels.astype(np.int64)
        num_classes = max(10, int(y.max()) + 1) if len(y) else 10
        d = Dataset(images[:, None, :, :], y, num_classes, f"mnist-{split.replace('t10k', 'test')}")
        out.append(d if raw else standardize_mnist(d))
    return out[0], out[1]


def standardize_mnist(d: Dataset) -> Dataset:
    """`d` with uint8 pixels (`load_mnist(raw=True)`, or a subset of it) as float32,
    standardized as `load_mnist` does: the same bits, element by element."""
    # a pixel's float depends on its value alone: look the 256 values up (one pass over
    # the data instead of four: 60,000 images in ~0.1 s instead of ~0.6 s), a block at a
    # time (numpy turns uint8 indices into an int64 copy: 8 bytes per pixel at once else)
    table = np.arange(256, dtype=np.float32)
    table *= np.float32(1.0 / 255.0)
    table -= np.float32(MNIST_MEAN)
    table /= np.float32(MNIST_STD)
    if d.x.dtype != np.uint8:
        raise DataError(f"{d.name}: standardize_mnist needs uint8 pixels, got {d.x.dtype}")
    x = np.empty(d.x.shape, dtype=np.float32)
    pixels, out = d.x.reshape(-1), x.reshape(-1)
    for a in range(0, pixels.shape[0], 1 << 18):
        np.take(table, pixels[a : a + (1 << 18)], out=out[a : a + (1 << 18)])
    return Dataset(x, d.y, d.num_classes, d.name)


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, test) from scikit-learn's 8x8 digits (1,797 images): x float32
    (n, 1, 8, 8) scaled to [0, 1], y int64. The split is stratified-free, seeded by `seed`."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # scikit-learn is a test extra
        raise DataError("the digits dataset needs scikit-learn (pip install scikit-learn)") from exc
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"digits: test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return (
        Dataset(x[train_idx], y[train_idx], 10, "digits-train"),
        Dataset(x[test_idx], y[test_idx], 10, "digits-test"),
    )
