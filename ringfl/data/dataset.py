"""`Dataset`: features and integer labels held as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ringfl.data.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """`x`: float32, shape (n, *input_shape) — images are (n, channels, height, width),
    tabular data (n, features). `y`: int64 class labels in [0, num_classes)."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = "data"

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(f"{self.name}: x must have shape (n, ...), got {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise DataError(
                f"{self.name}: {self.x.shape[0]} samples in x but y has shape {self.y.shape}"
            )
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise DataError(
                f"{self.name}: labels must lie in [0, {self.num_classes}), "
                f"got [{self.y.min()}, {self.y.max()}]"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, indices: np.ndarray, name: str | None = None) -> Dataset:
        """The samples at `indices` (copied), as a new `Dataset`."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx], self.num_classes, name or self.name)

    @staticmethod
    def concat(parts: list[Dataset], name: str = "pooled") -> Dataset:
        """All samples of `parts`, in order. Input shapes must agree."""
        if not parts:
            raise DataError(f"{name}: nothing to concatenate")
        shapes = {p.input_shape for p in parts}
        if len(shapes) != 1:
            raise DataError(f"{name}: parts have different input shapes {sorted(shapes)}")
        return Dataset(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            max(p.num_classes for p in parts),
            name,
        )
