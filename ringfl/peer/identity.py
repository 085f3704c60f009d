"""A peer's identity: two X25519 key pairs in one key directory, and their public halves
in the topology file.

Two key pairs, not one, because key reuse across protocols is discouraged:

| file | used for | public half in the topology |
|---|---|---|
| `curve.key` | ZeroMQ CURVE: link encryption and peer authentication | node attribute `public_key` (Z85, 40 chars, as ZeroMQ prints it) |
| `mask.key` | secure masking: sealing Shamir shares (`ringfl.secure`) | node attribute `mask_key` (base64, 44 chars) |

Each secret file holds the raw 32-byte private key as base64 on one line, written
atomically with mode 0600 from the start (`ringfl.secure.keys.save_keys`); loading refuses
a file that group or others can read. `curve.pub` and `mask.pub` hold the public halves
(world-readable; they can always be recomputed from the secret files). Secrets are never
logged or printed.

Layout: a key directory of one peer holds the four files; `generate_for_topology` writes
one such directory per node, `KEYS/<node id>/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
from zmq.utils import z85

from ringfl.errors import ConfigError, TopologyError
from ringfl.secure.keys import (
    PeerKeys,
    decode_public_key,
    encode_public_key,
    load_keys,
    save_keys,
)
from ringfl.topology import PUBLIC_KEY, peers

#: Node attribute with the secure-masking public key (base64 of the raw X25519 key).
MASK_KEY = "mask_key"

CURVE_SECRET = "curve.key"
CURVE_PUBLIC = "curve.pub"
MASK_SECRET = "mask.key"
MASK_PUBLIC = "mask.pub"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.@+=-]{1,128}$")


def curve_text(raw_public: bytes) -> str:
    """A raw 32-byte public key as ZeroMQ's Z85 text (40 characters)."""
    return z85.encode(bytes(raw_public)).decode("ascii")


@dataclass(frozen=True)
class Identity:
    """A peer's two key pairs. `curve` secures links; `mask` seals secure-masking shares."""

    curve: PeerKeys
    mask: PeerKeys

    @classmethod
    def generate(cls) -> Identity:
        return cls(PeerKeys.generate(), PeerKeys.generate())

    @property
    def curve_public(self) -> str:
        """Z85 text of the CURVE public key (the topology's `public_key`)."""
        return curve_text(self.curve.public_bytes)

    @property
    def curve_secret_z85(self) -> bytes:
        """The CURVE secret key as ZeroMQ wants it (Z85 bytes). Never log this."""
        return z85.encode(self.curve.private_bytes())

    @property
    def mask_public(self) -> str:
        """Base64 text of the masking public key (the topology's `mask_key`)."""
        return self.mask.public_text

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the four files into `folder` (secrets 0600). Refuses to replace existing
        keys unless `overwrite`."""
        folder = Path(folder)
        for name in (CURVE_SECRET, MASK_SECRET):
            if (folder / name).exists() and not overwrite:
                raise ConfigError(f"{folder / name} exists; refusing to overwrite a secret key")
        folder.mkdir(parents=True, exist_ok=True)
        save_keys(self.curve, folder / CURVE_SECRET)
        save_keys(self.mask, folder / MASK_SECRET)
        (folder / CURVE_PUBLIC).write_text(self.curve_public + "\n")
        (folder / MASK_PUBLIC).write_text(self.mask_public + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Identity:
        """Read a key directory written by `save` (see the module docstring)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"key directory {folder} not found")
        return cls(load_keys(folder / CURVE_SECRET), load_keys(folder / MASK_SECRET))


def node_dir_name(node: Hashable) -> str:
    """The key sub-directory name of a node; refuses ids that are not safe file names."""
    name = str(node)
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise TopologyError(
            f"node id {node!r} cannot name a key directory (use letters, digits, _.@+=-)"
        )
    return name


def find_identity_dir(keys: str | os.PathLike[str], node: Hashable) -> Path:
    """`keys` itself when it holds a key pair, else `keys/<node>` (a directory made by
    `generate_for_topology`)."""
    keys = Path(keys)
    if (keys / CURVE_SECRET).exists():
        return keys
    sub = keys / node_dir_name(node)
    if (sub / CURVE_SECRET).exists():
        return sub
    raise ConfigError(
        f"no keys for node {node!r}: neither {keys / CURVE_SECRET} nor {sub / CURVE_SECRET} "
        "exists (make them with `ringfl keys generate`)"
    )


def read_public_keys(folder: str | os.PathLike[str]) -> tuple[str, str]:
    """(CURVE Z85, mask base64) public keys of a key directory: from the `.pub` files, or
    recomputed from the secret files when those are missing."""
    folder = Path(folder)
    try:
        curve = (folder / CURVE_PUBLIC).read_text().strip()
        mask = (folder / MASK_PUBLIC).read_text().strip()
    except FileNotFoundError:
        ident = Identity.load(folder)
        return ident.curve_public, ident.mask_public
    decode_public_key(curve, where=str(folder / CURVE_PUBLIC))
    decode_public_key(mask, where=str(folder / MASK_PUBLIC))
    return curve, mask


def generate_for_topology(
    graph: nx.Graph, out: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[Hashable, Identity]:
    """One key directory per node under `out`, and the public keys written into `graph`
    (attributes `public_key` and `mask_key`; the caller saves the graph)."""
    out = Path(out)
    names = {node: node_dir_name(node) for node in peers(graph)}
    if not overwrite:
        for name in names.values():
            if (out / name / CURVE_SECRET).exists():
                raise ConfigError(
                    f"{out / name} already holds keys; refusing to overwrite (use --force)"
                )
    made = {}
    for node, name in names.items():
        ident = Identity.generate()
        ident.save(out / name, overwrite=overwrite)
        made[node] = ident
    install_public_keys(graph, {n: (i.curve_public, i.mask_public) for n, i in made.items()})
    return made


def install_public_keys(graph: nx.Graph, keys: dict[Hashable, tuple[str, str]]) -> None:
    """Set `public_key` (CURVE) and `mask_key` of the given nodes."""
    for node, (curve, mask) in keys.items():
        graph.nodes[node][PUBLIC_KEY] = curve
        graph.nodes[node][MASK_KEY] = mask


def keys_from_directory(graph: nx.Graph, keys_dir: str | os.PathLike[str]) -> int:
    """Write the public keys found in `keys_dir/<node>/` into `graph`; returns how many
    nodes got keys. A node without a key directory is an error naming it."""
    keys_dir = Path(keys_dir)
    found = {}
    for node in peers(graph):
        folder = keys_dir / node_dir_name(node)
        if not folder.is_dir():
            raise ConfigError(f"{keys_dir}: no key directory for node {node!r} ({folder})")
        found[node] = read_public_keys(folder)
    install_public_keys(graph, found)
    return len(found)


@dataclass(frozen=True)
class TopologyKeys:
    """The public keys of every peer, by peer id: raw CURVE keys (`curve`, None when the
    topology carries none) and masking keys (`mask`, None when it carries none)."""

    curve: dict[int, bytes] | None
    mask: dict[int, bytes] | None


def topology_keys(graph: nx.Graph, source: str = "topology") -> TopologyKeys:
    """Read and check the public keys of a topology: all nodes or none for each kind;
    no two nodes share a key, and no node's CURVE key equals any masking key."""
    nodes = peers(graph)
    out: dict[str, dict[int, bytes] | None] = {}
    for attr in (PUBLIC_KEY, MASK_KEY):
        have = [i for i, n in enumerate(nodes) if attr in graph.nodes[n]]
        if not have:
            out[attr] = None
            continue
        if len(have) != len(nodes):
            missing = [repr(n) for i, n in enumerate(nodes) if i not in set(have)]
            raise TopologyError(
                f"{source}: {attr} is set on some nodes but not on {', '.join(missing[:8])}"
            )
        keys = {
            i: decode_public_key(graph.nodes[n][attr], where=f"{source}: {attr} of node {n!r}")
            for i, n in enumerate(nodes)
        }
        if len(set(keys.values())) != len(keys):
            raise TopologyError(f"{source}: two nodes share one {attr}")
        out[attr] = keys
    curve, mask = out[PUBLIC_KEY], out[MASK_KEY]
    if curve and mask and set(curve.values()) & set(mask.values()):
        raise TopologyError(f"{source}: a key is used both as public_key and as mask_key")
    return TopologyKeys(curve, mask)


__all__ = [
    "MASK_KEY",
    "Identity",
    "TopologyKeys",
    "curve_text",
    "encode_public_key",
    "find_identity_dir",
    "generate_for_topology",
    "install_public_keys",
    "keys_from_directory",
    "node_dir_name",
    "read_public_keys",
    "topology_keys",
]
