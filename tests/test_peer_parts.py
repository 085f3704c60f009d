"""The parts of a real peer, without processes: control messages, membership arithmetic,
adaptive deadlines, key directories, CURVE links, node selection, resilient collectives."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import networkx as nx
import numpy as np
import pytest
import zmq

from ringfl import topology, wire
from ringfl.algorithms import RingAverage, RoundInput, SumResult
from ringfl.collective.events import Header, Kind, Message
from ringfl.collective.resilient import ResilientNeighbourAverage, RetryingRingSum, attempt_tag
from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy
from ringfl.engine.membership import (
    has_majority,
    live_weights,
    next_members,
    ring_members,
    split_flags,
    with_flags,
)
from ringfl.errors import ConfigError, TopologyError, WireError
from ringfl.peer import control
from ringfl.peer.control import Op, State
from ringfl.peer.curve import CurveSecurity, fingerprint
from ringfl.peer.identity import (
    MASK_KEY,
    Identity,
    find_identity_dir,
    generate_for_topology,
    keys_from_directory,
    node_dir_name,
    topology_keys,
)
from ringfl.peer.launch import is_local_address
from ringfl.peer.node import data_session, resolve_node
from ringfl.transport.memory import Crash, MemoryNetwork
from ringfl.transport.zmq import ZmqPeer
from tests.peer_util import cli, env, short_dir

# -- control messages ------------------------------------------------------------------


def roundtrip(msg: Message, n: int = 4, model: int | None = None):
    frames = wire.to_bytes(wire.encode(msg))
    return control.decode_control(wire.decode(frames, max_elements=1 << 20), n_peers=n,
                                  model_elements=model)  # fmt: skip


def test_control_messages_round_trip() -> None:
    h = control.hello(
        Op.ACK, session=9, sender=2, incarnation=123, state=State.RUNNING, round=5,
        member=True, data_session=2**64 - 3,
    )  # fmt: skip
    assert roundtrip(h) == (Op.ACK, control.Hello(123, State.RUNNING, 5, True, 2**64 - 3))
    lost = control.make(Op.LOST, session=9, round=3, sender=1, payload=control.ints(0, 3))
    assert roundtrip(lost) == (Op.LOST, frozenset({0, 3}))
    model = np.arange(7, dtype=np.float32)
    st = control.StateTransfer(2**63 + 1, 4, (3, 0, 1), model)
    blob = control.encode_state(st)
    op, got = roundtrip(control.make(Op.STATE, session=9, round=4, sender=0, payload=blob), 4, 7)
    assert op == Op.STATE and got.members == (3, 0, 1) and got.session == 2**63 + 1
    assert np.array_equal(got.model, model)
    res = control.SumResult((0, 2), np.ones(5, np.float32))
    op, got = roundtrip(
        control.make(Op.RESULT, session=9, round=1, sender=2, payload=control.encode_result(res))
    )
    assert op == Op.RESULT and got.members == (0, 2) and np.array_equal(got.total, res.total)


@pytest.mark.parametrize(
    ("op", "payload", "why"),
    [
        (99, control.ints(1), "unknown operation"),
        (Op.PING, np.ones(1, np.float32), "dtype"),
        (Op.HELLO, control.ints(1, 0, 0), "5"),
        (Op.HELLO, control.ints(1, 7, 0, 0, 0), "unknown state"),
        (Op.HELLO, control.ints(-1, 0, 0, 0, 0), "bad incarnation"),
        (Op.LOST, control.ints(1, 1), "bad peer ids"),
        (Op.LOST, control.ints(9), "bad peer ids"),
        (Op.LOST, np.zeros(0, np.int64), "0 peers"),
        (Op.STATE, np.zeros(5, np.uint8), "too short"),
        (Op.RESULT, np.zeros(30, np.uint8), "length"),
    ],
)
def test_control_rejects_malformed(op, payload, why) -> None:
    h = Header(Kind.CONTROL, 9, 0, int(op), 0, 0, 1, payload.dtype.name, payload.shape[0])
    with pytest.raises(WireError, match=why):
        control.decode_control(Message(h, payload), n_peers=4)


def test_state_transfer_checks_model_and_members() -> None:
    def state(members, model, rnd=2, header_round=2):
        blob = control.encode_state(control.StateTransfer(1, rnd, members, model))
        return Message(
            Header(Kind.CONTROL, 9, header_round, int(Op.STATE), 0, 0, 0, "uint8", len(blob)),
            blob,
        )

    m = np.zeros(4, np.float32)
    with pytest.raises(WireError, match="expected 5"):
        control.decode_control(state((0, 1), m), n_peers=3, model_elements=5)
    with pytest.raises(WireError, match="member list"):
        control.decode_control(state((0, 0), m), n_peers=3)
    with pytest.raises(WireError, match="header"):
        control.decode_control(state((0, 1), m, header_round=3), n_peers=3)
    with pytest.raises(WireError, match="non-finite"):
        control.decode_control(state((0, 1), np.full(4, np.inf, np.float32)), n_peers=3)


# -- membership ------------------------------------------------------------------------


def test_ring_membership_arithmetic() -> None:
    order = (3, 0, 4, 1, 2)
    assert ring_members(order, {0, 1, 2}) == (0, 1, 2)
    assert ring_members(order, {2, 3}) == (3, 2)
    assert ring_members(order, set(range(5))) is order  # everyone: the shared order itself
    assert next_members(order, contributors=[3, 4, 1], admitted=[0]) == (3, 0, 4, 1)
    assert [has_majority(k, 1) for k in (0, 1)] == [False, True]
    assert [has_majority(k, 2) for k in (1, 2)] == [False, True]
    assert [has_majority(k, 7) for k in (3, 4)] == [False, True]
    assert [has_majority(k, 8) for k in (4, 5)] == [False, True]


def test_payload_and_result() -> None:
    rng = np.random.default_rng(0)
    start = rng.normal(size=11).astype(np.float32)
    d = rng.normal(size=11).astype(np.float32)
    algo = RingAverage()
    x = RoundInput(0, start, start + d, 0.25, 7)
    c = algo.contribution(x)
    cand = (5, 1, 3, 2)  # the ring's non-members, in ring order: one flag slot each
    p = with_flags(c, [1, 3], cand)
    assert p.dtype == np.float32 and p.shape == (16,)
    np.testing.assert_allclose(p[:11], ((start + d) - start) * np.float32(0.25))
    assert p[11] == np.float32(0.25) and list(p[12:]) == [0, 1, 1, 0]
    bad = start + d
    bad[5] = np.inf
    q = with_flags(algo.contribution(RoundInput(0, start, bad, 0.25, 7)), [2], cand)
    assert not q[:12].any() and list(q[12:]) == [0, 0, 0, 1]  # weight 0, flags still count
    total, admitted = split_flags(p + q, cand)
    assert total[-1] == np.float32(0.25) and admitted == frozenset({1, 2, 3})
    new = algo.aggregate(x, SumResult(total, (0, 1)))
    assert new.dtype == np.float32
    np.testing.assert_allclose(new, start + d, rtol=1e-5)
    zero = SumResult(np.zeros(12, np.float32), (0,))
    assert np.array_equal(algo.aggregate(x, zero), start)  # no weight arrived: unchanged
    with pytest.raises(ValueError):
        split_flags(p[:3], cand)
    with pytest.raises(ValueError, match="peer 0 is a member"):
        with_flags(c, [0], cand)
    assert with_flags(c, [], ()).shape == c.shape  # everyone a member: no flags at all


def test_gossip_weights_drop_the_edge() -> None:
    row = {0: 0.5, 1: 0.25, 2: 0.25}
    assert live_weights(row, 0, {2}) == {0: 0.75, 1: 0.25}
    assert live_weights(row, 0, set()) == row
    assert sum(live_weights(row, 0, {1, 2}).values()) == pytest.approx(1.0)


# -- deadlines -------------------------------------------------------------------------


def test_adaptive_deadline() -> None:
    d = AdaptiveDeadline(DeadlinePolicy(k=3, margin_s=0.5, min_s=1, max_s=10, initial_s=4))
    assert d.seconds() == 4
    d.observe(0.1)
    assert d.seconds() == 1.0  # 3 · 0.1 + 0.5 = 0.8 → clamped up to min
    for _ in range(30):
        d.observe(2.0)
    assert d.seconds() == pytest.approx(6.5, rel=1e-3)
    d.observe(100.0)
    assert d.seconds() == 10  # clamped down to max
    assert d.probe_s() == 5.0  # half the deadline
    d2 = AdaptiveDeadline(DeadlinePolicy(min_s=0.3, initial_s=0.3, probe_min_s=0.5))
    assert d2.probe_s() == 0.3  # never longer than the deadline itself
    d.observe(float("nan"))  # ignored
    assert d.seconds() == 10
    for bad in (dict(k=0), dict(min_s=5, max_s=1), dict(alpha=0), dict(margin_s=-1)):
        with pytest.raises(ConfigError):
            DeadlinePolicy(**bad)


# -- keys ------------------------------------------------------------------------------


def test_identity_files(tmp_path) -> None:
    ident = Identity.generate()
    ident.save(tmp_path / "k")
    for name in ("curve.key", "mask.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "k" / name).st_mode) == 0o600
    back = Identity.load(tmp_path / "k")
    assert back.curve_public == ident.curve_public and back.mask_public == ident.mask_public
    assert zmq.curve_public(back.curve_secret_z85).decode() == ident.curve_public
    assert ident.curve.public_bytes != ident.mask.public_bytes  # two key pairs
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        Identity.generate().save(tmp_path / "k")
    os.chmod(tmp_path / "k" / "mask.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load(tmp_path / "k")
    assert find_identity_dir(tmp_path / "k", "x") == tmp_path / "k"
    with pytest.raises(ConfigError, match="no keys for node"):
        find_identity_dir(tmp_path, "nobody")
    with pytest.raises(TopologyError):
        node_dir_name("../etc")


def test_topology_keys(tmp_path) -> None:
    g = topology.make("ring", 3)
    assert topology_keys(g) == topology_keys(g).__class__(None, None)
    made = generate_for_topology(g, tmp_path / "keys")
    keys = topology_keys(g)
    assert keys.curve[1] == made[1].curve.public_bytes
    assert keys.mask[2] == made[2].mask.public_bytes
    assert (tmp_path / "keys" / "0" / "curve.key").exists()
    with pytest.raises(ConfigError, match="refusing"):
        generate_for_topology(g, tmp_path / "keys")
    h = nx.Graph(g)
    del h.nodes[1][MASK_KEY]
    with pytest.raises(TopologyError, match="not on 1"):
        topology_keys(h)
    h = nx.Graph(g)
    h.nodes[0][MASK_KEY] = h.nodes[1][MASK_KEY]
    with pytest.raises(TopologyError, match="share"):
        topology_keys(h)
    h = nx.Graph(g)
    h.nodes[0][MASK_KEY] = made[0].curve.public_text
    with pytest.raises(TopologyError, match="both"):
        topology_keys(h)
    fresh = topology.make("ring", 3)
    assert keys_from_directory(fresh, tmp_path / "keys") == 3
    assert topology_keys(fresh) == keys


def test_keys_cli(tmp_path, capsys) -> None:
    from ringfl.cli import main

    def run(*a: str) -> tuple[int, str, str]:
        code = main(list(a))
        out = capsys.readouterr()
        return code, out.out, out.err

    topo = tmp_path / "t.json"
    assert run("topology", "make", "ring", "-n", "3", "-o", str(topo))[0] == 0
    # the installed entry point, once, as a user runs it
    r = subprocess.run(
        cli("keys", "generate", "--topology", str(topo), "--out", str(tmp_path / "k")),
        env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    g = topology.load(topo)
    assert all("public_key" in g.nodes[n] and MASK_KEY in g.nodes[n] for n in g)
    secrets = [(tmp_path / "k" / str(n) / "curve.key").read_text().strip() for n in g]
    assert not any(s in r.stdout + r.stderr for s in secrets)
    code, _, err = run("keys", "generate", "--topology", str(topo), "--out", str(tmp_path / "k"))
    assert code == 1 and "refusing to overwrite" in err
    code, out, _ = run("keys", "generate", "--out", str(tmp_path / "solo"))
    assert code == 0 and "public_key (CURVE)" in out
    other = tmp_path / "u.json"
    assert run("topology", "make", "ring", "-n", "3", "-o", str(other))[0] == 0
    code, _, err = run("topology", "keys", str(other), "--keys-dir", str(tmp_path / "k"))
    assert code == 0, err
    assert topology_keys(topology.load(other)) == topology_keys(g)
    code, _, err = run("peer", "--topology", str(other), "--config", str(tmp_path / "no.toml"))
    assert code == 1 and "config file not found" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndataset = "digits"\n')
    bare = tmp_path / "bare.json"
    assert (
        run("topology", "make", "ring", "-n", "3", "--local-ports", "23900", "-o", str(bare))[0]
        == 0
    )
    code, _, err = run("peer", "--topology", str(bare), "--config", str(cfg), "--node", "0")
    assert code == 1 and "no public keys" in err and "--insecure" in err


# -- node selection ------------------------------------------------------------------


def test_resolve_node_from_flag_or_environment() -> None:
    g = nx.Graph()
    g.add_nodes_from(["a", "b", "c"])
    assert resolve_node(g, "b", {}) == "b"
    assert resolve_node(g, None, {"RINGFL_NODE": "c"}) == "c"
    assert resolve_node(g, None, {"SLURM_PROCID": "1"}) == "b"
    assert resolve_node(g, None, {"OMPI_COMM_WORLD_RANK": "2", "PMI_RANK": "0"}) == "c"
    with pytest.raises(TopologyError, match="not in the topology"):
        resolve_node(g, "z", {})
    with pytest.raises(ConfigError, match="has 3 peers"):
        resolve_node(g, None, {"SLURM_PROCID": "3"})
    with pytest.raises(ConfigError, match="which node"):
        resolve_node(g, None, {})
    assert data_session(1, {0: 5, 1: 6}) != data_session(1, {0: 5, 1: 7})


def test_local_addresses() -> None:
    assert is_local_address("ipc:///tmp/x.sock")
    assert is_local_address("tcp://127.0.0.1:5000")
    assert is_local_address("tcp://localhost:5000")
    assert not is_local_address("tcp://192.0.2.77:5000")  # TEST-NET-1, never local
    assert not is_local_address("tcp://no-such-host.invalid:5000")


# -- CURVE -----------------------------------------------------------------------------


def test_curve_links_authenticate_peers_and_refuse_strangers() -> None:
    d = short_dir()
    ids = {p: Identity.generate() for p in range(3)}
    keys = {p: i.curve.public_bytes for p, i in ids.items() if p < 2}  # 2 is a stranger
    ctxs = [zmq.Context() for _ in range(2)]  # one ZAP handler per context
    ctx = ctxs[1]
    refused: list[str] = []
    secs = [CurveSecurity(ids[p], p, keys, ctxs[p], on_refused=refused.append) for p in range(2)]
    for s in secs:
        s.start()
    eps = {p: f"ipc://{d}/c{p}.sock" for p in range(3)}
    server = ZmqPeer(0, {0: eps[0]}, context=ctxs[0], security=secs[0])
    client = ZmqPeer(1, eps, context=ctxs[1], security=secs[1])
    # the stranger knows peer 0's public key but its own is not in the allowlist
    stranger = ctx.socket(zmq.PUSH)
    stranger.curve_secretkey = ids[2].curve_secret_z85
    stranger.curve_publickey = zmq.curve_public(ids[2].curve_secret_z85)
    stranger.curve_serverkey = zmq.utils.z85.encode(keys[0])
    stranger.connect(eps[0])
    try:
        msg = Message(Header(Kind.CONTROL, 1, 0, 3, 0, 0, 1, "int64", 1), np.ones(1, np.int64))
        stranger.send_multipart(wire.encode(msg), copy=True)
        client._socket_to(0).send_multipart(wire.encode(msg), copy=True)
        server.pull.setsockopt(zmq.RCVTIMEO, 5000)
        frames = server.pull.recv_multipart(copy=False)
        assert CurveSecurity.authenticated_peer(frames[0]) == 1
        assert wire.decode(frames, max_elements=8).header.sender == 1
        end = time.monotonic() + 5
        while not refused and time.monotonic() < end:
            time.sleep(0.02)
        assert refused and refused[0] == fingerprint(ids[2].curve.public_bytes)
        server.pull.setsockopt(zmq.RCVTIMEO, 300)
        with pytest.raises(zmq.Again):  # nothing from the stranger ever arrives
            server.pull.recv_multipart()
        with pytest.raises(ConfigError, match="not the topology's public_key"):
            CurveSecurity(ids[2], 1, keys, ctx)
    finally:
        stranger.close(0)
        client.close()
        server.close()
        for s in secs:
            s.stop()
        for c in ctxs:
            c.term()


# -- resilient collectives -----------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_retrying_ring_sum_without_faults(n: int) -> None:
    rng = np.random.default_rng(n)
    xs = [rng.normal(size=13).astype(np.float32) for _ in range(n)]
    machines = {p: RetryingRingSum(p, list(range(n)), xs[p], session=1, round=0) for p in range(n)}
    res = MemoryNetwork().run(machines)
    for p in range(n):
        np.testing.assert_allclose(res.results[p], np.sum(xs, axis=0), rtol=1e-5, atol=1e-6)
        assert machines[p].members == tuple(range(n))


def test_retrying_ring_sum_reforms_without_the_lost_peer() -> None:
    n, m = 5, 1001
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=m).astype(np.float32) for _ in range(n)]
    machines = {
        p: RetryingRingSum(p, list(range(n)), xs[p], session=1, round=0, segment_bytes=256)
        for p in range(n)
    }
    res = MemoryNetwork().run(machines, faults=[Crash(2, after_sends=3)])
    want = np.sum([xs[p] for p in (0, 1, 3, 4)], axis=0)
    for p in (0, 1, 3, 4):
        np.testing.assert_allclose(res.results[p], want, rtol=1e-5, atol=1e-5)
        assert machines[p].members == (0, 1, 3, 4)
        assert machines[p].tag == attempt_tag({2})
    same = {res.results[p].tobytes() for p in (0, 1, 3, 4)}
    assert len(same) == 1  # one attempt, one ring order: the same bits everywhere


def test_retrying_ring_sum_adopts_a_finished_sum() -> None:
    m = RetryingRingSum(0, [0, 1, 2], np.ones(4, np.float32), session=1, round=0)
    m.start()
    with pytest.raises(WireError):
        m.adopt(np.ones(3, np.float32), (0, 1))
    with pytest.raises(WireError):
        m.adopt(np.ones(4, np.float32), (1, 2))
    (done,) = m.adopt(np.full(4, 3, np.float32), (0, 1, 2))
    assert m.done and np.array_equal(done.result, np.full(4, 3, np.float32))


def test_gossip_step_drops_a_lost_neighbour() -> None:
    g = topology.make("ring", 4)
    w = topology.mixing_matrix(g)
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=9) for _ in range(4)]
    machines = {
        p: ResilientNeighbourAverage(
            p, {j: w[p, j] for j in range(4) if w[p, j] > 0}, xs[p], session=1, round=0
        )
        for p in range(4)
    }
    res = MemoryNetwork().run(machines, faults=[Crash(1, after_sends=0)])
    for p in (0, 2):  # neighbours of 1: its weight moved to themselves
        row = {j: w[p, j] for j in range(4) if w[p, j] > 0 and j != 1}
        row[p] += w[p, 1]
        want = sum(row[j] * xs[j] for j in row)
        np.testing.assert_allclose(res.results[p], want, rtol=1e-12)
        assert machines[p].dropped == {1}
    want3 = sum(w[3, j] * xs[j] for j in range(4))
    np.testing.assert_allclose(res.results[3], want3, rtol=1e-12)
