"""Standing-node parts without processes: specs, signatures, policy, lifecycle, message
bounds, the SQLite store and its migrations, and the runner's files."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import stat
from pathlib import Path

import networkx as nx
import pytest

from ringfl.errors import ConfigError
from ringfl.standing import lifecycle, messages
from ringfl.standing.catalog import Catalog
from ringfl.standing.example import write_csv
from ringfl.standing.policy import Policy, model_params
from ringfl.standing.signing import SigningKey, public_key, verify
from ringfl.standing.spec import SpecError, load_spec_text, parse_spec, schedule_seconds
from ringfl.standing.store import MIGRATIONS, SCHEMA_VERSION, Store
from tests.standing_util import analytics_spec, task_spec


def test_spec_normal_form_and_errors_name_the_field():
    spec = parse_spec(task_spec(["a", "b", "c"], schedule="every 2s", max_runs=3))
    assert parse_spec(spec) == spec  # normal form is a fixed point
    assert spec["approval_timeout"] == 300.0 and spec["pace"] == 0.0
    assert schedule_seconds("every 60m") == 3600 and schedule_seconds("every 1.5h") == 5400
    bad = [
        ({"kind": "nope"}, "kind"),
        ({"participants": ["a", "a"]}, "participants"),
        ({"datasets": {"a": "digits"}}, "datasets"),
        ({"parties": {"a": {"train.rounds": 3}}}, "parties.a.train.rounds"),
        ({"parties": {"z": {}}}, "parties.z"),
        ({"max_runs": 0, "schedule": "every 1s"}, "max_runs"),
        ({"config": {"train": {"lr": float("nan")}}}, "config.train.lr"),
        ({"extra": 1}, "extra"),
        ({"columns": []}, "columns"),
    ]
    for change, field in bad:
        with pytest.raises(SpecError) as e:
            parse_spec({**task_spec(["a", "b", "c"]), **change})
        assert e.value.field == field, (change, str(e.value))
    with pytest.raises(SpecError) as e:
        parse_spec(task_spec(["a", "b", "c"]) | {"max_runs": 2})
    assert e.value.field == "max_runs"


def test_the_examples_tasks_pass_the_examples_policy(tmp_path):
    from ringfl.standing.example import make_example

    root = make_example(tmp_path, ports=(21901, 21902, 21903))
    pol = Policy.load(root / "b" / "policy.toml")
    cat = Catalog.load(root / "b" / "catalog.toml")
    for name in ("task.toml", "analytics.toml"):
        spec = load_spec_text((root / name).read_text(), name)
        assert pol.check(spec, me="b", proposer="a", catalog=cat) == [], name


def test_a_secure_task_needs_three_participants():
    for spec in (task_spec(["a", "b"]), analytics_spec(["a", "b"])):
        with pytest.raises(SpecError) as e:
            parse_spec(spec)
        assert e.value.field == "participants"
        assert "a secure task needs at least 3 participants, this one has 2" in str(e.value)
    # a task without masking may be smaller (its parties see each other's models anyway)
    plain = task_spec(["a", "b"])
    plain["config"]["algorithm"]["secure"] = False
    assert parse_spec(plain)["participants"] == ["a", "b"]
    gossip = task_spec(["a"])
    gossip["config"]["algorithm"] = {"name": "gossip", "secure": False}
    assert parse_spec(gossip)["participants"] == ["a"]


def test_statistics_task_specs_are_checked_by_the_workload_parsers():
    spec = parse_spec(analytics_spec(["a", "b", "c"]))
    assert spec["kind"] == "analytics" and spec["config"]["ops"][0]["op"] == "mean"
    newton = {**analytics_spec(["a", "b", "c"]), "kind": "newton"}
    newton["config"] = {"label": "label", "newton": {"l2": 1.0}}
    assert parse_spec(newton)["config"]["newton"] == {"l2": 1.0}
    bad = [
        ("analytics", {"ops": [{"op": "median"}]}, "config"),  # no column
        ("analytics", {"ops": [], "extra": 1}, "config"),
        ("gbdt", {"label": "y", "gbdt": {"max_depth": -1}}, "config"),
        ("gbdt", {"label": "y", "workload": "newton"}, "config.workload"),
        ("newton", {}, "config"),  # no label
    ]
    for kind, cfg, field in bad:
        with pytest.raises(SpecError) as e:
            parse_spec({**analytics_spec(["a", "b", "c"]), "kind": kind, "config": cfg})
        assert e.value.field == field, (kind, cfg, str(e.value))
    with pytest.raises(SpecError) as e:
        parse_spec({**analytics_spec(["a", "b", "c"]), "parties": {"b": {"train.lr": 0.1}}})
    assert e.value.field == "parties.b" and "train tasks only" in str(e.value)
    toml = 'kind = "train"\nparticipants = ["a", "b", "c"]\n[datasets]\na = "d"\nb = "d"\nc = "d"\n'
    assert load_spec_text(toml)["datasets"] == {"a": "d", "b": "d", "c": "d"}
    with pytest.raises(SpecError):
        load_spec_text("kind = ")


def test_signatures_bind_every_field(tmp_path):
    k = SigningKey.generate()
    body = {"v": 1, "task": "t", "origin": "a", "kind": "vote", "time": 1.5, "data": {"x": [1]}}
    sig = k.sign(body)
    pub = public_key(k.public_text, "test")
    assert verify(pub, body, sig)
    assert not verify(pub, {**body, "time": 1.6}, sig)
    assert not verify(pub, {**body, "data": {"x": [2]}}, sig)
    assert not verify(public_key(SigningKey.generate().public_text, "t"), body, sig)
    assert not verify(pub, body, "not base64!") and not verify(pub, body, None)
    k.save(tmp_path)
    assert stat.S_IMODE((tmp_path / "sign.key").stat().st_mode) == 0o600
    assert SigningKey.load(tmp_path).public_text == k.public_text
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        k.save(tmp_path)
    (tmp_path / "sign.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        SigningKey.load(tmp_path)
    with pytest.raises(ConfigError, match="Ed25519"):
        public_key("abc", "node x")


@pytest.fixture
def catalog(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    write_csv(tmp_path / "d.csv", rng.random((30, 4)), rng.integers(0, 3, 30))
    (tmp_path / "cat.toml").write_text('[datasets.tab]\nfile = "d.csv"\nlabel = "label"\n')
    return Catalog.load(tmp_path / "cat.toml")


def test_catalog_shows_schemas_not_paths(catalog, tmp_path):
    pub = catalog.public()
    assert pub == {
        "tab": {
            "description": "",
            "schema": {"columns": ["pixel0", "pixel1", "pixel2", "pixel3"], "label": "label",
                       "classes": 3, "shape": [4], "format": "csv"},
        }
    }  # fmt: skip
    assert str(tmp_path) not in json.dumps(pub)
    train, test, k = catalog.write_view("tab", ["pixel2", "pixel0"], tmp_path / "view")
    import numpy as np

    with np.load(train) as z:
        assert z["x"].shape == (30, 2)
    # a statistics task's view: one CSV table of the task's columns and the label
    from ringfl.workloads.table import read_csv

    table = read_csv(catalog.write_table("tab", ["pixel2", "pixel0"], tmp_path / "tview"))
    assert table.names == ["pixel2", "pixel0", "label"] and len(table) == 30
    with np.load(train) as z:
        np.testing.assert_allclose(table.columns["pixel2"], z["x"][:, 0], rtol=1e-6)
    (tmp_path / "bad.toml").write_text('[datasets.x]\nfile = "missing.csv"\n')
    with pytest.raises(ConfigError, match=r"datasets.x.file: file not found"):
        Catalog.load(tmp_path / "bad.toml")


def test_policy_checks_and_field_permissions(catalog):
    pol = Policy.from_dict(
        {
            "proposers": ["a"],
            "datasets": ["tab"],
            "columns": {"tab": {"deny": ["pixel3"]}},
            "limits": {"max_rounds": 5, "max_model_params": 20, "min_parties": 2},
            "require": {"algorithm.secure": True},
            "fields": {"train.lr": "writable", "train.batch_size": "readable",
                       "train.momentum": "private"},
            "defaults": {"train.batch_size": 16, "train.momentum": 0.3},
        }
    )  # fmt: skip
    spec = parse_spec(
        {
            **task_spec(["a", "b", "c"]),
            "datasets": {"a": "tab", "b": "tab", "c": "tab"},
            "columns": ["pixel0", "pixel1"],
            "parties": {"b": {"train.lr": 0.05}},
        }
    )
    spec["config"]["algorithm"]["secure"] = True
    spec["config"]["train"].pop("local_steps")
    assert pol.check(spec, me="b", proposer="a", catalog=catalog) == []
    values, readable = pol.local_values(spec, "b")
    assert values == {"train.lr": 0.05, "train.batch_size": 16, "train.momentum": 0.3}
    assert readable == {"train.lr": 0.05, "train.batch_size": 16}  # momentum is private
    assert model_params(spec, catalog.entries["tab"].schema) == 2 * 3 + 3

    def why(**change):
        s = json.loads(json.dumps(spec))
        for k, v in change.items():
            s[k] = v
        return " | ".join(
            pol.check(parse_spec(s), me="b", proposer=s.pop("_p", "a"), catalog=catalog)
        )

    assert "proposer: c may not propose" in " | ".join(
        pol.check(spec, me="b", proposer="c", catalog=catalog)
    )
    assert "unknown dataset 'x'" in why(datasets={"a": "tab", "b": "x", "c": "tab"})
    assert "pixel3 of 'tab' are forbidden" in why(columns=["pixel3"])
    assert "not in dataset" in why(columns=["nope"])
    plain = json.loads(json.dumps(spec["config"]))
    plain["algorithm"]["secure"] = False  # one party alone: only a task without masking
    alone = why(participants=["b"], datasets={"b": "tab"}, parties={}, config=plain)
    assert "min_parties = 2" in alone and "algorithm.secure: must be True" in alone
    cfg = json.loads(json.dumps(spec["config"]))
    cfg["train"]["rounds"] = 6
    assert "max_rounds = 5" in why(config=cfg)
    cfg = json.loads(json.dumps(spec["config"]))
    cfg["model"] = {"name": "mlp"}
    assert "over max_model_params = 20" in why(config=cfg)
    cfg = json.loads(json.dumps(spec["config"]))
    cfg["algorithm"]["secure"] = False
    assert "algorithm.secure: must be True" in why(config=cfg)
    assert "train.batch_size: readable at b" in why(parties={"b": {"train.batch_size": 8}})
    cfg = json.loads(json.dumps(spec["config"]))
    cfg["train"]["momentum"] = 0.0
    assert "train.momentum: private at b" in why(config=cfg)
    with pytest.raises(ConfigError, match="fields.train.rounds"):
        Policy.from_dict({"fields": {"train.rounds": "private"}})
    with pytest.raises(ConfigError, match="limits.max_rounds"):
        Policy.from_dict({"limits": {"max_rounds": 0}})


def _ev(origin, kind, t, data, task="t1"):
    return {"v": 1, "task": task, "origin": origin, "kind": kind, "time": t, "data": data}


def _proposal(parts, t=100.0, **spec):
    raw = task_spec(parts, **spec)
    raw["config"]["algorithm"]["secure"] = False  # two parties: only a task without masking
    s = parse_spec(raw)
    return _ev(parts[0], "proposed", t, {"spec": s, "nonce": "n" * 16, "expires": t + 60})


def test_lifecycle_from_events():
    p = _proposal(["a", "b"])
    assert lifecycle.derive([], 0) is None
    assert lifecycle.derive([p], 101).status == "created"
    va = _ev("a", "vote", 101, {"accept": True})
    assert lifecycle.derive([p, va], 102).status == "waiting"
    v = lifecycle.derive([p, va], 100 + 60 + lifecycle.GRACE_S + 1)
    assert v.status == "failed" and "no answer from b" in v.reason
    rb = _ev("b", "vote", 102, {"accept": False, "reason": "rounds"})
    v = lifecycle.derive([p, va, rb], 103)
    assert v.status == "failed" and v.reason == "rejected by b: rounds"
    vb = _ev("b", "vote", 102, {"accept": True})
    v = lifecycle.derive([p, va, vb], 103)
    assert (v.status, v.next_run, v.next_due) == ("running", 1, 102)
    ev = [p, va, vb] + [_ev(x, "ready", 104, {"run": 1, "endpoint": "tcp://h:1"}) for x in "ab"]
    ev += [_ev(x, "started", 105, {"run": 1}) for x in "ab"]
    assert lifecycle.derive(ev, 106).runs[0].status == "running"
    fin = [
        _ev(x, "finished", 110 + i, {"run": 1, "status": "succeeded", "hash": "h1"})
        for i, x in enumerate("ab")
    ]
    v = lifecycle.derive(ev + fin, 112)
    assert v.status == "succeeded" and v.runs[0].hash == "h1"
    odd = [fin[0], _ev("b", "finished", 111, {"run": 1, "status": "succeeded", "hash": "h2"})]
    assert "different model hashes" in lifecycle.derive(ev + odd, 112).reason
    stranger = _ev("z", "cancel", 111, {"reason": "mine"})  # not a participant: ignored
    assert lifecycle.derive(ev + fin + [stranger], 112).status == "succeeded"
    cancel = _ev("b", "cancel", 106, {"reason": "stop"})
    assert lifecycle.derive(ev + [cancel], 107).reason == "cancelled by b: stop"
    # a schedule: the next run is due `interval` after the last participant finished
    ps = _proposal(["a", "b"], schedule="every 2s", max_runs=2)
    v = lifecycle.derive([ps, va, vb] + ev[3:] + fin, 112)
    assert (v.status, v.next_run, v.next_due) == ("running", 2, 111 + 2.0)


def test_messages_are_bounded_and_typed():
    ok = {"t": "hb", "ack": 3, "inc": 7, "cat": ""}
    assert messages.decode(messages.encode(ok)) == ok
    bad = [
        b"\xff\xfe",
        b"[1, 2]",
        b'{"t": "hb", "ack": -1, "inc": 1}',
        b'{"t": "nope"}',
        b'{"t": "hb", "ack": NaN, "inc": 1}',
        b'{"t": "ev", "seq": 1, "ev": {"v": 1}}',
        b'{"t": "ev", "seq": 1, "ev": '
        + json.dumps(_ev("a", "vote", 1, {}) | {"x": 1}).encode()
        + b"}",
        b'{"t": "ev", "seq": 1, "ev": '
        + json.dumps(_ev("a", "ready", 1, {"run": "1"})).encode()
        + b"}",
        b"[" * 5000 + b"]" * 5000,
        b'{"t": "cat", "datasets": ' + b'{"a": ' * 20 + b"1" + b"}" * 21,
        b" " * (messages.MAX_MESSAGE + 1),
    ]
    for raw in bad:
        with pytest.raises(messages.MessageError):
            messages.decode(raw)


def test_store_migrates_and_keeps_data(tmp_path):
    path = tmp_path / "node.db"
    db = sqlite3.connect(path)  # a database at schema version 1, as an older ringfl left it
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO nonces VALUES ('n1', 'a', 5.0)")
    db.commit()
    db.close()
    s = Store(path)
    assert s.version() == SCHEMA_VERSION == 2
    assert s.one("SELECT proposer FROM nonces WHERE nonce = 'n1'")["proposer"] == "a"
    s.refuse(1.0, "d", "t", "because")
    assert s.q("SELECT reason FROM refusals")[0]["reason"] == "because"
    with pytest.raises(RuntimeError), s.tx():  # a failed transaction leaves nothing behind
        s.x("INSERT INTO nonces VALUES ('n2', 'a', 5.0)")
        raise RuntimeError
    assert s.one("SELECT 1 FROM nonces WHERE nonce = 'n2'") is None
    s.x("UPDATE schema_version SET version = 99")
    s.close()
    with pytest.raises(ConfigError, match="newer than this ringfl"):
        Store(path)


def test_runner_writes_a_ring_of_the_participants(tmp_path, monkeypatch):
    from ringfl import topology
    from ringfl.config import load_config
    from ringfl.standing import runner

    g = nx.Graph()
    for n in "abc":
        g.add_node(n, address="tcp://127.0.0.1:1", public_key="k" + n)
    req = runner.RunRequest(
        task="t", run=1, node="b", participants=["c", "a", "b"],
        endpoints={"a": "tcp://127.0.0.1:21001", "b": "tcp://127.0.0.1:21002", "c": "tcp://127.0.0.1:21003"},
        node_graph=g, keys=tmp_path, folder=Path("run"), train=Path("run/data/train.npz"),
        test=Path("run/data/test.npz"),
        config={"seed": 2, "model": {"layers": [{"type": "flatten"}, {"type": "linear"}]},
                "train": {"rounds": 2, "lr": 0.1}, "algorithm": {"name": "ring"}},
    )  # fmt: skip
    t = runner.run_topology(req)
    assert t.graph["ring"] == ["c", "a", "b"] and t.nodes["a"]["address"].endswith(":21001")
    assert t.nodes["c"]["public_key"] == "kc"
    monkeypatch.chdir(tmp_path)  # relative paths, as `ringfl node serve --state DIR` gives
    (tmp_path / "run" / "data").mkdir(parents=True)
    for f in ("train.npz", "test.npz"):
        (tmp_path / "run" / "data" / f).write_bytes(b"")
    cmd = runner.prepare(req)
    assert cmd[cmd.index("--node") + 1] == "b"
    cfg = load_config(tmp_path / "run" / "config.toml")
    # this party's own file goes to its peer alone (--data); the config names no files
    assert cmd[cmd.index("--data") + 1] == str(tmp_path / "run/data/train.npz")
    assert cfg.data.dataset == "files" and cfg.data.files == ()
    assert cfg.data.test == str(tmp_path / "run/data/test.npz")
    assert cfg.train.rounds == 2
    assert cfg.model.layers == ({"type": "flatten"}, {"type": "linear"})
    assert topology.ring_order(topology.load(tmp_path / "run" / "topology.json")) == ["c", "a", "b"]
    out = runner.read_outcome(tmp_path / "run", 3)
    assert out.status == "failed" and "status 3" in out.reason
    # a statistics kind: the same peer, with the query and this party's table
    query = {"ops": [{"op": "mean", "column": "pixel1"}]}
    stats = dataclasses.replace(
        req, kind="analytics", config=query, folder=Path("stats"), train=Path("t.csv"), test=None
    )
    cmd = runner.prepare(stats)
    assert cmd[cmd.index("analytics") + 1 : cmd.index("analytics") + 3] == [
        "--query",
        str(Path("stats") / "job.json"),
    ]
    assert json.loads((tmp_path / "stats" / "job.json").read_text()) == query
    assert cmd[cmd.index("--data") + 1] == str(tmp_path / "t.csv")
    assert cmd[cmd.index("--peer-dir") + 1] == str(Path("stats") / "peer")
    assert cmd[cmd.index("-o") + 1] == str(Path("stats") / "result.json")
    fit = runner.prepare(dataclasses.replace(stats, kind="gbdt", config={"label": "label"}))
    assert "fit" in fit and "--report" in fit
    assert json.loads((tmp_path / "stats" / "job.json").read_text())["workload"] == "gbdt"


def test_node_keys_command_writes_sign_keys(tmp_path):
    from ringfl import topology
    from ringfl.cli import main
    from ringfl.standing.signing import SIGN_KEY

    g = nx.Graph()
    g.add_edge("x", "y")
    topology.save(g, tmp_path / "t.json")
    assert (
        main(["node", "keys", "--topology", str(tmp_path / "t.json"), "--out", str(tmp_path / "k")])
        == 0
    )
    g = topology.load(tmp_path / "t.json")
    for n in "xy":
        assert SigningKey.load(tmp_path / "k" / n).public_text == g.nodes[n][SIGN_KEY]
    assert (
        main(["node", "keys", "--topology", str(tmp_path / "t.json"), "--out", str(tmp_path / "k")])
        == 1
    )
    assert main(["node", "keys", "--out", str(tmp_path / "one")]) == 0
    assert stat.S_IMODE((tmp_path / "one" / "sign.key").stat().st_mode) == 0o600


def test_ringfl_node_is_the_client():
    import ringfl
    from ringfl.standing.client import Node

    assert ringfl.Node is Node
    with pytest.raises(AttributeError):
        ringfl.NoSuchThing  # noqa: B018


def test_partner_catalogs_keep_only_well_formed_entries():
    from ringfl.standing.service import _catalog_view

    good = {"description": "d", "schema": {"columns": ["x"], "shape": [1], "label": "y",
                                           "classes": 2, "format": "csv"}}  # fmt: skip
    got = _catalog_view({"ok": good, "bad1": 3, "bad2": {"schema": {"columns": "x", "shape": [1]}},
                         "bad3": {"schema": {"columns": ["x"], "shape": ["1"]}}})  # fmt: skip
    assert got == {"ok": good}
