"""`ringfl topology` through real subprocesses: exit status 0 / 1 / 2, one-line errors
that name the problem and the node(s), no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx

from ringfl import topology
from ringfl.commands.topology import KINDS as CLI_KINDS
from ringfl.topology import load, peers, save

ROOT = Path(__file__).resolve().parents[1]


def ringfl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "ringfl", *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *parts: str) -> None:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ringfl: error: ")
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_make_then_check(tmp_path):
    out = tmp_path / "t.graphml"
    done = ringfl("topology", "make", "torus", "-n", "12", "--local-ports", "23700", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "12 nodes, 24 edges" in done.stdout
    g = load(out)
    assert g.graph["rows"] == 3 and g.nodes[11]["address"] == "tcp://127.0.0.1:23711"
    done = ringfl("topology", "check", out)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for line in ("nodes        12", "edges        24", "degree       4..4", "diameter     3"):
        assert line in text
    ring = [int(x) for x in text.split("ring", 2)[-1].split("(from")[0].split()]
    assert ring == g.graph["ring"]
    done = ringfl("topology", "check", "--json", out)
    info = json.loads(done.stdout)
    assert info["ring"] == g.graph["ring"] and info["ring_source"] == "file"
    assert info["addresses"] == 12


def test_check_disconnected_graph(tmp_path):
    g = nx.Graph([(0, 1), (1, 2), (2, 0), (3, 4)])
    save(g, tmp_path / "split.json", check=False)
    done = ringfl("topology", "check", tmp_path / "split.json")
    assert_one_line_error(done, "split.json", "disconnected", "{0, 1, 2}", "{3, 4}")


def test_check_self_loop(tmp_path):
    g = nx.Graph([("a", "b"), ("b", "c"), ("c", "a"), ("b", "b")])
    save(g, tmp_path / "loop.edgelist", check=False)
    done = ringfl("topology", "check", tmp_path / "loop.edgelist")
    assert_one_line_error(done, "loop.edgelist", "self-loop on node 'b'")


def test_check_malformed_address(tmp_path):
    path = tmp_path / "addr.json"
    path.write_text(
        json.dumps(
            {
                "nodes": [
                    {"id": 0, "address": "tcp://127.0.0.1:23000"},
                    {"id": 1, "address": "tcp://127.0.0.1"},
                    {"id": 2, "address": "tcp://127.0.0.1:23002"},
                ],
                "edges": [
                    {"source": 0, "target": 1},
                    {"source": 1, "target": 2},
                    {"source": 2, "target": 0},
                ],
            }
        )
    )
    done = ringfl("topology", "check", path)
    assert_one_line_error(done, "addr.json", "address of node 1", "'tcp://127.0.0.1' is malformed")


def test_usage_errors_exit_2(tmp_path):
    done = ringfl("topology", "make", "ring", "-o", tmp_path / "x.json")  # no -n
    assert done.returncode == 2 and "-n" in done.stderr and "Traceback" not in done.stderr
    done = ringfl("topology", "make", "ring", "-n", "4", "-k", "2", "-o", tmp_path / "x.json")
    assert done.returncode == 2 and "ring does not take -k" in done.stderr
    done = ringfl("topology", "make", "blob", "-n", "4", "-o", tmp_path / "x.json")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = ringfl("topology", "make", "ring", "-n", "0", "-o", tmp_path / "x.json")
    assert done.returncode == 2
    assert not (tmp_path / "x.json").exists()


def test_invalid_make_parameters_exit_1(tmp_path):
    done = ringfl("topology", "make", "torus", "-n", "7", "-o", tmp_path / "x.json")
    assert_one_line_error(done, "n=7 does not factor")
    done = ringfl("topology", "make", "ring", "-n", "3", "-o", tmp_path / "x.yaml")
    assert_one_line_error(done, "x.yaml", "unknown topology format")


def test_plain_networkx_graphml_checks(tmp_path):
    # Written by plain networkx: 'club' node attributes, integer 'weight' edges, no
    # ringfl attributes at all.
    path = tmp_path / "karate.graphml"
    nx.write_graphml(nx.karate_club_graph(), path)
    done = ringfl("topology", "check", path)
    assert done.returncode == 0, done.stderr
    assert "nodes        34" in done.stdout and "edges        78" in done.stdout
    assert "metropolis-hastings (edge weights ignored for mixing" in done.stdout
    assert "ring         none: node 11 has only one neighbour (0)" in done.stdout
    assert peers(load(path)) == list(range(34))


def test_check_several_files_reports_each(tmp_path):
    save(nx.path_graph(3), tmp_path / "ok.json")
    save(nx.Graph([(0, 0), (0, 1)]), tmp_path / "bad.json", check=False)
    done = ringfl("topology", "check", "--table", tmp_path / "ok.json", tmp_path / "bad.json")
    assert done.returncode == 1
    assert "| ok.json | 3 | 2 | 1..2 | 2 |" in done.stdout
    assert_one_line_error(done, "bad.json", "self-loop on node 0")


def test_draw(tmp_path):
    out = tmp_path / "torus.png"
    done = ringfl("topology", "draw", ROOT / "topology" / "torus-16.json", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "ring highlighted" in done.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    out2 = tmp_path / "star.svg"
    done = ringfl("topology", "draw", ROOT / "topology" / "star-8.json", "-o", out2)
    assert done.returncode == 0 and "no ring" in done.stdout
    assert b"<svg" in out2.read_bytes()[:1000]
    done = ringfl("topology", "draw", tmp_path / "missing.json", "-o", tmp_path / "m.png")
    assert_one_line_error(done, "missing.json", "cannot read")


def test_cli_kinds_match_the_library():
    # The CLI lists them itself so that `ringfl --help` need not import networkx.
    assert CLI_KINDS == topology.KINDS
