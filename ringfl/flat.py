"""Fuse a model's tensors into one contiguous 1-D numpy buffer, and back.

    buffer, spec = flatten(model.state_dict())      # one copy (or none, see below)
    ... all-reduce `buffer` ...
    state = unflatten(buffer, spec)                 # views of `buffer`, no copy
    unflatten(buffer, spec, into=model.state_dict())  # copy into the model's tensors

One buffer has one dtype, so `flatten` refuses tensors of mixed dtypes (ValueError naming
them). A model's state_dict often mixes them (BatchNorm's `num_batches_tracked` is int64):
average the floating-point entries and keep the rest local with
`flatten(floating_only(state))` (float32/float64 entries only).

Copies: `flatten` copies every tensor once into a new buffer, except when the tensors are
already consecutive views of one contiguous CPU storage (e.g. what `unflatten` returned, or a
single contiguous tensor): then the buffer is a view of that storage — it shares memory with
the tensors — and nothing is copied. Tensors on another device
are copied to the CPU. `unflatten` without `into` returns views of the buffer (no copy);
with `into` it copies into the given tensors in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlatSpec:
    """Where each tensor lives in the flat buffer. `keys` are state_dict names, or list
    indices (ints) when a list of tensors was flattened."""

    keys: tuple[str | int, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]  # element offset of each tensor; offsets[-1] == numel
    dtype: np.dtype
    torch_dtype: torch.dtype
    is_mapping: bool

    @property
    def numel(self) -> int:
        return self.offsets[-1]


def _items(state: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> tuple[list, bool]:
    if isinstance(state, Mapping):
        return list(state.items()), True
    if isinstance(state, Sequence):
        return list(enumerate(state)), False
    raise ValueError(f"flatten: expected a state_dict or a list of tensors, got {type(state)}")


def floating_only(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `state` that are float32/float64 tensors (what gets averaged);
    integer buffers such as BatchNorm's `num_batches_tracked` stay out and keep their
    local value."""
    return {k: v for k, v in state.items() if v.dtype in (torch.float32, torch.float64)}


def _already_flat(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The 1-D tensor over the tensors' shared storage, if they are consecutive
    contiguous views of it; else None."""
    first = tensors[0]
    if not all(t.device.type == "cpu" and t.is_contiguous() for t in tensors):
        return None
    storage = first.untyped_storage()
    ptr = storage.data_ptr()
    offset = first.storage_offset()
    pos = offset
    for t in tensors:
        if t.untyped_storage().data_ptr() != ptr or t.storage_offset() != pos:
            return None
        pos += t.numel()
    base = torch.empty(0, dtype=first.dtype).set_(storage)
    return base[offset:pos]


def flatten(
    state: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
) -> tuple[np.ndarray, FlatSpec]:
    """One contiguous 1-D numpy buffer holding every tensor of `state`, and its spec.

    All tensors must share one dtype with a numpy equivalent. The buffer is new memory
    (one copy), or a zero-copy view when the tensors already lie back to back in one
    storage. Gradients are not tracked (tensors are detached).
    """
    items, is_mapping = _items(state)
    if not items:
        raise ValueError("flatten: nothing to flatten (empty state)")
    tensors = []
    for k, t in items:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"flatten: entry {k!r} is {type(t).__name__}, not a tensor")
        tensors.append(t.detach())
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        by: dict[str, list[str]] = {}
        for (k, _), t in zip(items, tensors, strict=True):
            by.setdefault(str(t.dtype), []).append(str(k))
        detail = "; ".join(
            f"{d}: {', '.join(ks[:4])}{' …' if len(ks) > 4 else ''}" for d, ks in by.items()
        )
        raise ValueError(
            f"flatten: mixed dtypes ({detail}); flatten one dtype at a time, "
            "e.g. flatten(floating_only(state))"
        )
    tdtype = tensors[0].dtype
    try:
        dtype = torch.empty(0, dtype=tdtype).numpy().dtype
    except TypeError:
        raise ValueError(f"flatten: dtype {tdtype} has no numpy equivalent") from None
    offsets = [0]
    for t in tensors:
        offsets.append(offsets[-1] + t.numel())
    spec = FlatSpec(
        keys=tuple(k for k, _ in items),
        shapes=tuple(tuple(t.shape) for t in tensors),
        offsets=tuple(offsets),
        dtype=dtype,
        torch_dtype=tdtype,
        is_mapping=is_mapping,
    )
    flat = _already_flat(tensors)
    if flat is not None:
        return flat.numpy(), spec
    buffer = np.empty(offsets[-1], dtype=dtype)
    out = torch.from_numpy(buffer)
    for t, a, b in zip(tensors, offsets, offsets[1:], strict=False):
        out[a:b].copy_(t.reshape(-1))
    return buffer, spec


def unflatten(
    buffer: np.ndarray,
    spec: FlatSpec,
    *,
    into: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    """The tensors of `spec` from `buffer`: zero-copy views of it (so they change when the
    buffer does), or, with `into`, copied in place into those tensors (returned)."""
    buf = np.asarray(buffer)
    if buf.ndim != 1 or buf.shape[0] != spec.numel or buf.dtype != spec.dtype:
        raise ValueError(
            f"unflatten: buffer {buf.dtype}{list(buf.shape)} does not match the spec "
            f"({spec.dtype}[{spec.numel}])"
        )
    if not buf.flags.writeable:
        buf = buf.copy()  # torch cannot view read-only memory
    base = torch.from_numpy(np.ascontiguousarray(buf))
    views = [
        base[a:b].view(shape)
        for a, b, shape in zip(spec.offsets, spec.offsets[1:], spec.shapes, strict=False)
    ]
    if into is not None:
        items, is_mapping = _items(into)
        targets = dict(items)
        for key, v in zip(spec.keys, views, strict=True):
            if key not in targets:
                raise ValueError(f"unflatten: target has no entry {key!r}")
            t = targets[key]
            if tuple(t.shape) != tuple(v.shape):
                raise ValueError(f"unflatten: {key!r} has shape {tuple(t.shape)}, spec {v.shape}")
            with torch.no_grad():
                t.copy_(v)
        return dict(targets) if is_mapping else [targets[i] for i in range(len(targets))]
    if spec.is_mapping:
        return dict(zip(spec.keys, views, strict=True))  # type: ignore[arg-type]
    return views
