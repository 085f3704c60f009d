"""`ringfl node example`: three parties on one machine, ready to serve.

Writes into OUT: `topology.json` (parties a, b, c with node addresses on 127.0.0.1 and
their public keys), `keys/<party>/` (CURVE, masking and signing keys, secrets 0600), for
each party `<party>/catalog.toml` with its own third of the bundled digits data as CSV,
`<party>/policy.toml`, `task.toml`, a small secure-ring training task, and
`analytics.toml`, a secure analytics task over the same tables.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np

from ringfl import topology
from ringfl.peer.identity import generate_for_topology
from ringfl.standing.signing import SIGN_KEY, SigningKey

PARTIES = ("a", "b", "c")

POLICY = """\
proposers = "*"
kinds = ["train", "analytics", "newton", "gbdt"]
datasets = ["digits"]
[limits]
max_rounds = 50
max_model_params = 100000
min_parties = 3
[require]
"algorithm.secure" = true
[fields]
"train.lr" = "writable"
"train.local_steps" = "writable"
"train.batch_size" = "readable"
"train.momentum" = "private"
[defaults]
"train.batch_size" = 32
"train.momentum" = 0.9
"""

TASK = """\
name = "digits-logreg"
kind = "train"
participants = ["a", "b", "c"]
[datasets]
a = "digits"
b = "digits"
c = "digits"
[config]
seed = 1
[config.model]
name = "logreg"
[config.train]
rounds = 10
local_steps = 10
lr = 0.1
[config.algorithm]
name = "ring"
secure = true
"""

ANALYTICS = """\
name = "digits-stats"
kind = "analytics"
participants = ["a", "b", "c"]
columns = ["pixel20", "pixel30"]
[datasets]
a = "digits"
b = "digits"
c = "digits"
[config]                 # the query, as for `ringfl analytics --query`
min_count = 10
[[config.ops]]
op = "mean"
column = "pixel20"
[[config.ops]]
op = "groupby"
by = "label"
groups = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
column = "pixel30"
"""


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    x = x.reshape(len(x), -1)
    header = ",".join([f"pixel{i}" for i in range(x.shape[1])] + ["label"])
    rows = [",".join(f"{v:.4g}" for v in r) + f",{int(t)}" for r, t in zip(x, y, strict=False)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def sign_keys(g: nx.Graph, keys: Path) -> None:
    """A signing key per node under `keys/<node>/`, public halves into `g` (`sign_key`)."""
    for n in topology.peers(g):
        k = SigningKey.generate()
        k.save(keys / str(n))
        g.nodes[n][SIGN_KEY] = k.public_text


def make_example(
    out: str | Path,
    *,
    ports: tuple[int, ...] = (23101, 23102, 23103),
    parties: tuple[str, ...] = PARTIES,
) -> Path:
    """Write the example (see the module docstring); returns OUT."""
    from ringfl.data.builtin import load_digits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = nx.complete_graph(0)
    for p, port in zip(parties, ports, strict=False):
        g.add_node(p, address=f"tcp://127.0.0.1:{port}")
    for i, p in enumerate(parties):
        for q in parties[i + 1 :]:
            g.add_edge(p, q)
    generate_for_topology(g, out / "keys")
    sign_keys(g, out / "keys")
    topology.save(g, out / "topology.json")
    train, test = load_digits(seed=0)
    order = np.random.default_rng(0).permutation(len(train.y))
    for i, p in enumerate(parties):
        d = out / p
        d.mkdir(exist_ok=True)
        idx = np.sort(order[i :: len(parties)])
        write_csv(d / "digits.csv", train.x[idx], train.y[idx])
        write_csv(d / "digits-test.csv", test.x, test.y)
        (d / "catalog.toml").write_text(
            '[datasets.digits]\nfile = "digits.csv"\ntest = "digits-test.csv"\n'
            'label = "label"\ndescription = "8x8 handwritten digits, this party\'s third"\n'
        )
        (d / "policy.toml").write_text(POLICY)
    (out / "task.toml").write_text(TASK)
    (out / "analytics.toml").write_text(ANALYTICS)
    return out


__all__ = ["PARTIES", "make_example", "sign_keys", "write_csv"]
