"""Neighbour averaging (one gossip step) against W @ X."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl.collective.events import Header, Kind, Message
from ringfl.collective.gossip import NeighbourAverage, weights_row
from ringfl.errors import PeerTimeout, WireError
from ringfl.transport.memory import Crash, MemoryNetwork


def metropolis(adj: np.ndarray) -> np.ndarray:
    """Metropolis–Hastings weights of an undirected graph (reference, built here)."""
    n = adj.shape[0]
    deg = adj.sum(axis=1)
    w = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and adj[i, j]:
                w[i, j] = 1.0 / (1 + max(deg[i], deg[j]))
        w[i, i] = 1.0 - w[i].sum()
    return w


def graphs(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ring = np.zeros((n, n), dtype=int)
    for i in range(n):
        if n > 1:
            ring[i, (i + 1) % n] = ring[(i + 1) % n, i] = 1
    full = np.ones((n, n), dtype=int) - np.eye(n, dtype=int)
    rand = np.triu((rng.random((n, n)) < 0.5).astype(int), 1)
    rand = rand + rand.T
    return [ring, full, rand]


def run(w: np.ndarray, xs: np.ndarray, segment_bytes: int = 1 << 20, **kw):
    n = w.shape[0]
    machines = {
        i: NeighbourAverage(i, weights_row(w, i), xs[i], segment_bytes=segment_bytes, **kw)
        for i in range(n)
    }
    return MemoryNetwork().run(machines), machines


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_equals_w_times_x(n: int, dtype: str) -> None:
    for gi, adj in enumerate(graphs(n, seed=n)):
        w = metropolis(adj)
        for m in sorted({0, 1, n + 1, 1000}):
            xs = np.random.default_rng(m + gi).standard_normal((n, m)).astype(dtype)
            res, _ = run(w, xs, segment_bytes=64)
            want = w @ xs.astype(np.float64)
            for i in range(n):
                got = res.results[i]
                assert got.dtype == np.dtype(dtype) and got.shape == (m,)
                np.testing.assert_allclose(got, want[i], rtol=1e-5, atol=1e-5)


def test_result_does_not_depend_on_arrival_order() -> None:
    n, m = 5, 333
    w = metropolis(graphs(n, 0)[1])
    xs = np.random.default_rng(1).standard_normal((n, m)).astype(np.float32)
    a = NeighbourAverage(0, weights_row(w, 0), xs[0], segment_bytes=100)
    b = NeighbourAverage(0, weights_row(w, 0), xs[0], segment_bytes=100)
    msgs = []
    for j in range(1, n):
        other = NeighbourAverage(j, weights_row(w, j), xs[j], segment_bytes=100)
        msgs += [s.message for s in other.start() if s.to == 0]
    a.start(), b.start()
    ra = [x for msg in msgs for x in a.receive(msg)]
    rb = [x for msg in reversed(msgs) for x in b.receive(msg)]
    assert ra[-1].result.tobytes() == rb[-1].result.tobytes()


def test_bytes_sent_are_degree_times_m() -> None:
    n, m = 6, 1000
    adj = graphs(n, 2)[0]
    w = metropolis(adj)
    res, _ = run(w, np.ones((n, m), np.float32), segment_bytes=512)
    for i in range(n):
        assert res.bytes_sent[i] == adj[i].sum() * m * 4


def test_rejections() -> None:
    w = metropolis(graphs(4, 0)[0])  # ring: 0's neighbours are 1 and 3
    g = NeighbourAverage(0, weights_row(w, 0), np.zeros(10), segment_bytes=40)
    g.start()

    def msg(**kw):
        f = dict(
            kind=Kind.GOSSIP,
            session=0,
            round=0,
            step=0,
            chunk=0,
            segment=0,
            sender=1,
            dtype="float64",
            length=5,
        )
        f.update(kw)
        return Message(Header(**f), np.zeros(f["length"], f["dtype"]))

    for bad, reason in [
        (dict(sender=2), "unexpected peer"),
        (dict(step=1), "step 1"),
        (dict(segment=2), "segment 2"),
        (dict(length=4), "4 elements"),
        (dict(dtype="float32"), "dtype float32"),
        (dict(kind=Kind.ALLREDUCE), "kind"),
    ]:
        with pytest.raises(WireError, match=reason):
            g.receive(msg(**bad))
    assert g.expecting() == {1, 3}
    g.receive(msg())
    with pytest.raises(WireError, match="duplicate"):
        g.receive(msg())
    g.receive(msg(segment=1))
    assert g.expecting() == {3}


def test_integer_buffers_and_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="float buffer"):
        NeighbourAverage(0, {0: 1.0}, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="weight"):
        NeighbourAverage(0, {1: float("nan")}, np.zeros(3))
    with pytest.raises(ValueError, match="no row for peer 5"):
        weights_row(np.eye(3), 5)


def test_lost_neighbour_is_named() -> None:
    n = 4
    w = metropolis(graphs(n, 0)[0])
    machines = {i: NeighbourAverage(i, weights_row(w, i), np.ones(10)) for i in range(n)}
    with pytest.raises(PeerTimeout) as exc:
        MemoryNetwork().run(machines, faults=[Crash(2)])
    assert exc.value.peers == (2,)
