"""Flatten a state_dict / list of tensors into one buffer and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ringfl.flat import flatten, floating_only, unflatten


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.BatchNorm2d(3),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 5),
    )


def test_roundtrip_state_dict_preserves_names_shapes_values() -> None:
    sd = floating_only(model().state_dict())
    buf, spec = flatten(sd)
    assert buf.dtype == np.float32 and buf.ndim == 1
    assert buf.shape[0] == sum(t.numel() for t in sd.values())
    back = unflatten(buf, spec)
    assert list(back) == list(sd)
    for k in sd:
        assert back[k].shape == sd[k].shape and back[k].dtype == sd[k].dtype
        assert torch.equal(back[k], sd[k])
    # order: tensors lie back to back in state_dict order
    first = next(iter(sd.values()))
    np.testing.assert_array_equal(buf[: first.numel()], first.reshape(-1).numpy())


def test_unflatten_gives_views_and_flatten_of_views_is_zero_copy() -> None:
    buf, spec = flatten(floating_only(model().state_dict()))
    views = unflatten(buf, spec)
    buf[0] = 123.0
    assert next(iter(views.values())).reshape(-1)[0].item() == 123.0
    again, _ = flatten(views)
    assert np.shares_memory(again, buf) and again.shape == buf.shape


def test_flatten_copies_separate_tensors() -> None:
    sd = floating_only(model().state_dict())
    buf, _ = flatten(sd)
    buf[:] = 0
    assert any(t.abs().sum() > 0 for t in sd.values())


def test_unflatten_into_copies_in_place() -> None:
    m = model()
    sd = floating_only(m.state_dict())
    buf, spec = flatten(sd)
    buf *= 2
    before = {k: v.clone() for k, v in sd.items()}
    unflatten(buf, spec, into=floating_only(m.state_dict()))
    for k, v in floating_only(m.state_dict()).items():
        assert torch.equal(v, before[k] * 2)


def test_list_of_tensors_and_other_dtypes() -> None:
    ts = [
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.tensor(7, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
    ]
    buf, spec = flatten(ts)
    assert buf.dtype == np.int64 and buf.tolist() == [0, 1, 2, 3, 4, 5, 7]
    back = unflatten(buf, spec)
    assert isinstance(back, list) and [tuple(t.shape) for t in back] == [(2, 3), (), (0,)]
    assert all(torch.equal(a, b) for a, b in zip(back, ts, strict=True))
    f64 = [torch.randn(3, dtype=torch.float64)]
    assert flatten(f64)[0].dtype == np.float64


def test_non_contiguous_and_grad_tensors() -> None:
    x = torch.randn(4, 5, requires_grad=True)
    sliced = x.detach()[:, 1:3]
    buf, spec = flatten([x, sliced])
    assert not np.shares_memory(buf, x.detach().numpy())
    back = unflatten(buf, spec)
    assert torch.equal(back[0], x.detach()) and torch.equal(back[1], sliced)


def test_mixed_dtypes_are_refused_with_names() -> None:
    sd = model().state_dict()  # BatchNorm has num_batches_tracked int64
    with pytest.raises(ValueError, match=r"mixed dtypes .*num_batches_tracked.*floating_only"):
        flatten(sd)
    assert "1.num_batches_tracked" not in floating_only(sd)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="empty"):
        flatten({})
    with pytest.raises(ValueError, match="not a tensor"):
        flatten({"a": np.zeros(3)})
    with pytest.raises(ValueError, match="no numpy equivalent"):
        flatten([torch.zeros(2, dtype=torch.bfloat16)])
    buf, spec = flatten([torch.zeros(3)])
    with pytest.raises(ValueError, match="does not match the spec"):
        unflatten(np.zeros(4, np.float32), spec)
    with pytest.raises(ValueError, match="does not match the spec"):
        unflatten(np.zeros(3, np.float64), spec)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    assert torch.equal(unflatten(ro, spec)[0], torch.zeros(3))
