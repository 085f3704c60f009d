"""The checked-in files in topology/: valid, made by the generators they name, loopback
ports in disjoint ranges below 32768, and a README table that matches them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ringfl.commands.topology import TABLE_HEADER, table_row
from ringfl.topology import assign_local_addresses, describe, load, make, peers, save

ROOT = Path(__file__).resolve().parents[1]
TOPO = ROOT / "topology"


def regenerate_module():
    spec = importlib.util.spec_from_file_location("regenerate", TOPO / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILES = regenerate_module().FILES


def make_args(args: list[str]) -> tuple[str, int, dict, int, int]:
    """(kind, n, generator keywords, base port, seed) from the make arguments."""
    kind, rest = args[0], args[1:]
    opts = dict(zip(rest[::2], rest[1::2], strict=True))
    kw = {"k": int(opts["-k"])} if "-k" in opts else {}
    return kind, int(opts["-n"]), kw, int(opts["--local-ports"]), int(opts.get("--seed", 0))


@pytest.mark.parametrize(("name", "args"), FILES, ids=[f for f, _ in FILES])
def test_file_is_what_make_produces(tmp_path, name, args):
    g = load(TOPO / name)
    kind, n, kw, base, seed = make_args(args)
    expected = assign_local_addresses(make(kind, n, seed=seed, **kw), base)
    save(expected, tmp_path / name)
    assert (tmp_path / name).read_bytes() == (TOPO / name).read_bytes()
    assert ("ring" in g.graph) == (kind != "star")


def test_port_ranges_are_disjoint_and_low():
    ports = []
    for name, _ in FILES:
        g = load(TOPO / name)
        addrs = [g.nodes[p]["address"] for p in peers(g)]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addrs)
        ports.extend(int(a.rsplit(":", 1)[1]) for a in addrs)
    assert len(ports) == len(set(ports))
    assert max(ports) < 32768


def test_readme_table_matches_files():
    rows = [table_row(describe(load(TOPO / name), name), name) for name, _ in FILES]
    table = TABLE_HEADER + "\n" + "\n".join(rows) + "\n"
    readme = (TOPO / "README.md").read_text()
    inside = readme.split("<!-- table:begin -->\n", 1)[1].split("<!-- table:end -->", 1)[0]
    assert inside == table
    assert "(torus-16.png)" in readme and (TOPO / "torus-16.png").stat().st_size > 5000
