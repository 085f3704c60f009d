"""Standing nodes as real processes on loopback: parties a, b, c run nodes; party d has
keys in the topology but no node, so the tests can speak to the nodes as d (an
impersonator with d's real keys) and send what an honest node never would."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from ringfl.standing.client import Node, NodeError
from ringfl.standing.signing import SigningKey
from ringfl.standing.spec import parse_spec
from tests.standing_util import Impersonator, Parties, analytics_spec, task_spec, wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    parties = Parties(
        tmp_path_factory.mktemp("standing"), ("a", "b", "c", "d"), max_rounds={"b": 20}
    )
    try:
        nodes = {p: parties.start(p) for p in ("a", "b", "c")}
        for node in nodes.values():  # every node hears the other two
            wait_until(
                lambda node=node: sum(x["live"] for x in node.parties()) == 3, 30, "liveness"
            )
        yield parties, nodes
    finally:
        parties.stop_all()


def test_three_nodes_train_one_model(net):
    parties, nodes = net
    a = nodes["a"]
    tid = a.create_task(task_spec(["a", "b", "c"]))
    done = a.wait(tid, timeout=120)
    assert done["status"] == "succeeded", done["reason"]
    hashes = set()
    for p, node in nodes.items():
        d = node.wait(tid, timeout=30)
        assert d["status"] == "succeeded", (p, d["reason"])
        assert d["result"]["run"] == 1
        hashes.add(d["result"]["hash"])
        # this party's own peer ran, and its model and metrics are there to download
        assert d["local"]["1"]["model"]
        assert len(d["local"]["1"]["metrics"]) == 3
        assert d["local"]["1"]["metrics"][-1]["members"] == ["a", "b", "c"]
    assert len(hashes) == 1 and len(hashes.pop()) == 64
    # every node keeps the same history, event for event
    histories = {p: [e["id"] for e in node.task(tid)["history"]] for p, node in nodes.items()}
    assert histories["a"] == histories["b"] == histories["c"]
    kinds = [e["kind"] for e in a.task(tid)["history"]]
    assert kinds.count("vote") == 3 and kinds.count("finished") == 3
    # per-field permissions: b's readable batch size is shown to a, its private momentum not
    votes = a.task(tid)["votes"]
    assert votes["b"]["fields"]["train.batch_size"] == 32
    assert "train.momentum" not in votes["b"]["fields"]
    # the trace holds the history and this party's peer output
    lines = list(a.trace(tid, follow=False))
    assert any("[b] vote accept" in x for x in lines)
    assert any("finished round=3" in x for x in lines)
    model = a.download(tid, "model", parties.root / "model-a.npz")
    assert model.stat().st_size > 0


def test_three_nodes_run_an_analytics_task_on_the_engine(net):
    """A statistics task through the same runner: each node's peer reads only its own
    table, the secure sums give pooled statistics, every node holds the same result."""
    import numpy as np
    import pandas as pd

    parties, nodes = net
    tid = nodes["b"].create_task(analytics_spec(["a", "b", "c"]))
    hashes = set()
    for p, node in nodes.items():
        d = node.wait(tid, timeout=120)
        assert d["status"] == "succeeded", (p, d["reason"])
        hashes.add(d["result"]["hash"])
    assert len(hashes) == 1 and len(hashes.pop()) == 64
    pooled = pd.concat([pd.read_csv(parties.root / p / "digits.csv") for p in "abc"])
    for p in "abc":
        got = json.loads(
            nodes[p].download(tid, "model", parties.root / f"stats-{p}.json").read_text()
        )
        v = got["values"]
        assert np.isclose(v["mean(pixel20)"], pooled.pixel20.mean(), rtol=1e-12, atol=1e-12)
        assert np.isclose(v["std(pixel20)"], pooled.pixel20.std(), rtol=1e-9)
        by = pooled.groupby("label").pixel30
        assert v["groupby(label)"]["0"]["count"] == by.count()[0]
        assert got["run"]["parties"] == 3 and got["run"]["node"] == p


def test_policy_rejection_reason_reaches_the_proposer(net):
    _, nodes = net
    spec = task_spec(["a", "b", "c"])
    spec["config"]["train"]["rounds"] = 30  # b allows 20 rounds, a and c 50
    tid = nodes["a"].create_task(spec)
    d = nodes["a"].wait(tid, timeout=30)
    assert d["status"] == "failed"
    assert "rejected by b" in d["reason"] and "max_rounds = 20" in d["reason"]
    votes = wait_until(lambda: len(v := nodes["a"].task(tid)["votes"]) == 3 and v, 30, "votes")
    assert votes["a"]["accept"] and votes["c"]["accept"] and not votes["b"]["accept"]
    assert nodes["c"].wait(tid, timeout=30)["status"] == "failed"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"datasets": {"a": "digits", "b": "nope"}}, "unknown dataset 'nope'"),
        ({"columns": ["pixel0", "pixel1"]}, "pixel0 of 'digits' are forbidden"),
        ({"columns": None}, "the task reads every column"),
        ({"kind": "gbdt", "config": {"label": "label"}}, "kind: 'gbdt' is not allowed"),
        ({"parties": {"b": {"train.batch_size": 8}}}, "train.batch_size: readable at b"),
    ],
)  # fmt: skip
def test_specs_breaking_a_policy_are_rejected_with_reasons(net, change, reason):
    _, nodes = net
    spec = task_spec(["a", "b", "c"])
    spec.update(change)
    if spec.get("columns") is None:
        spec.pop("columns")
    spec["datasets"] = {p: spec["datasets"].get(p, "digits") for p in spec["participants"]}
    if spec["datasets"].get("b") == "nope":
        spec["datasets"]["b"] = "nope"
    tid = nodes["a"].create_task(spec)
    d = nodes["a"].wait(tid, timeout=30)
    assert d["status"] == "failed"
    assert reason in d["reason"], d["reason"]


def test_api_needs_the_token_and_names_bad_fields(net):
    _, nodes = net
    a = nodes["a"]
    with urllib.request.urlopen(a.url + "/api/health", timeout=10) as r:
        assert json.loads(r.read())["node"] == "a"
    for token in ("", "wrong"):
        with pytest.raises(NodeError) as e:
            Node(a.url, token).tasks()
        assert e.value.status == 401
    req = urllib.request.Request(a.url + "/api/tasks", data=b"{not json", method="POST")
    req.add_header("Authorization", f"Bearer {a.token}")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.loads(e.value.read())["field"] == "body"
    abc = ["a", "b", "c"]
    cases = [
        ({k: v for k, v in task_spec(abc).items() if k != "participants"}, "participants"),
        (task_spec(["a", "b", "zz"]), "participants"),
        ({**task_spec(abc), "datasets": {"a": "digits", "b": "digits"},
          "participants": ["a", "b", "x"]}, "datasets"),
        ({**task_spec(["b", "c", "d"])}, "participants"),  # a itself must take part
        ({**task_spec(abc), "schedule": "sometimes"}, "schedule"),
        ({**task_spec(abc), "config": {"data": {}}}, "config.data"),
        (task_spec(["a", "b"]), "participants"),  # a secure sum needs 3 parties
    ]  # fmt: skip
    for spec, field in cases:
        with pytest.raises(NodeError) as e:
            a.request("POST", "/api/tasks", spec)
        assert e.value.status == 400 and e.value.field == field, (field, str(e.value))
    spec = task_spec(["a", "b", "zz"])
    with pytest.raises(NodeError) as e:
        a.request("POST", "/api/tasks", spec)
    assert e.value.field == "participants" and "not a node" in str(e.value)
    assert a.request("GET", "/api/health")["ok"]


def test_forged_unsigned_replayed_expired_refused(net):
    parties, nodes = net
    a = nodes["a"]
    d = Impersonator(parties, "d")
    try:
        dac = ["d", "a", "c"]
        good = d.proposal(task_spec(dac))
        cases = []
        unsigned = {k: v for k, v in d.proposal(task_spec(dac)).items() if k != "sig"}
        cases.append((unsigned, "unsigned"))
        forged = d.proposal(task_spec(dac))
        forged["sig"] = SigningKey.generate().sign({k: v for k, v in forged.items() if k != "sig"})
        cases.append((forged, "bad signature"))
        tampered = d.proposal(task_spec(dac))
        tampered["data"]["spec"]["config"]["train"]["rounds"] = 4
        cases.append((tampered, "bad signature"))
        cases.append((d.proposal(task_spec(dac), expires_in=-5), "expired"))
        cases.append((d.proposal(task_spec(dac), origin="b"), "not relayed"))
        cases.append((d.proposal(task_spec(["d", "b", "c"])), "not a participant"))
        two = parse_spec(task_spec(dac))  # signed, but a secure task of 2: an invalid spec
        two["participants"], _ = ["d", "a"], two["datasets"].pop("c")
        cases.append((d.proposal(two, checked=False), "a secure task needs at least 3"))
        for ev, why in cases:
            d.send_event("a", ev)
            assert why in d.next_refusal()["reason"]
        d.send_event("a", good)  # accepted: a votes, d (no node) never answers
        wait_until(lambda: any(t["id"] == good["task"] for t in a.tasks()), 10, "the task")
        d.send_event("a", good)  # the same signed proposal again
        assert "replayed" in d.next_refusal()["reason"]
        d.send_raw("a", b"\x80\x04 not json")
        assert "malformed" in d.next_refusal()["reason"]
        d.send_raw("a", json.dumps({"t": "ev", "seq": 99, "ev": {"v": 2}}).encode())
        assert "malformed message: ev.task: missing" in d.next_refusal()["reason"]
    finally:
        d.close()
    seen = [r["reason"] for r in a.refusals()]
    assert any("bad signature" in r for r in seen) and any("expired" in r for r in seen)
    assert [t for t in a.tasks() if t["id"] == forged["task"]] == []
    # none of it stopped the node: it still takes proposals and collects b's vote
    spec = task_spec(["a", "b", "c"])
    spec["config"]["train"]["rounds"] = 30  # over b's limit: a quick, complete round trip
    tid = a.create_task(spec)
    assert "rejected by b" in a.wait(tid, timeout=30)["reason"]


def test_a_killed_node_keeps_its_history_and_its_run(net):
    parties, nodes = net
    b = nodes["b"]
    before = {t["id"]: t["status"] for t in b.tasks()}
    assert "succeeded" in before.values() and "failed" in before.values()
    hist = {tid: [e["id"] for e in b.task(tid)["history"]] for tid in before}
    spec = task_spec(["a", "b", "c"], pace=0.4)
    spec["config"]["train"]["rounds"] = 10
    tid = nodes["a"].create_task(spec)

    def b_training():
        try:
            local = b.task(tid)["local"].get("1")
        except NodeError:  # the proposal has not reached b yet
            return None
        return local if local and len(local["metrics"]) >= 2 else None

    peer_pid = wait_until(b_training, 60, "b's peer to train")["pid"]
    # b's node dies mid-run (its peer, a process of its own, trains on)
    parties.kill("b", signal.SIGKILL)
    os.kill(peer_pid, 0)  # still there
    b2 = parties.start("b")
    nodes["b"] = b2
    assert {t["id"]: t["status"] for t in b2.tasks() if t["id"] in before} == before
    assert {t: [e["id"] for e in b2.task(t)["history"]] for t in before} == hist
    # the restarted node follows its running peer and reports the run's end; a's trace
    # follows the task live until then
    lines = list(nodes["a"].trace(tid, timeout=120))
    assert sum(" finished run 1 succeeded" in x for x in lines) == 3, lines[-5:]
    hashes = set()
    for node in nodes.values():
        d = node.wait(tid, timeout=120)
        assert d["status"] == "succeeded", d["reason"]
        hashes.add(d["result"]["hash"])
    assert len(hashes) == 1
    assert b2.task(tid)["local"]["1"]["pid"] == peer_pid
    log = (parties.state("b") / "node.log").read_text()
    assert (  # usually the first; the second when the peer was faster than the restart
        f"task {tid}: run 1: following peer pid {peer_pid}" in log
        or f"task {tid}: run 1: the peer ended while the node was down" in log
    )


def test_a_scheduled_task_runs_twice_from_the_last_model(net):
    parties, nodes = net
    spec = task_spec(["a", "b", "c"], schedule="every 1s", max_runs=2)
    spec["config"]["train"]["rounds"] = 2
    tid = nodes["c"].create_task(spec)
    d = nodes["a"].wait(tid, timeout=150)
    assert d["status"] == "succeeded", d["reason"]
    runs = d["runs"]
    assert [r["run"] for r in runs] == [1, 2]
    assert all(r["status"] == "succeeded" for r in runs)
    assert runs[0]["hash"] != runs[1]["hash"]
    # run 2 started from run 1's model: its peer loaded it as a round-0 checkpoint
    log = (parties.state("a") / "tasks" / tid / "run-2" / "peer.log").read_text()
    assert f"checkpoint_loaded round=0 hash={runs[0]['hash'][:16]}" in log
    assert nodes["c"].wait(tid, timeout=30)["result"]["run"] == 2
    # the second run was due at least 1 s after the first ended everywhere
    fin1 = max(f["time"] for f in runs[0]["finished"].values())
    ready2 = [e["time"] for e in d["history"] if e["kind"] == "ready" and e["data"]["run"] == 2]
    assert min(ready2) >= fin1 + 1.0
