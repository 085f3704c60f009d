"""Topologies: networkx graphs stored in files, their generators, validation, ring order
and mixing weights. Knows nothing about sockets or torch.

A peer's int id everywhere in ringfl is its index in `peers(g)` (node order in the file).
File format: docs/topology-format.md.
"""

from ringfl.topology.describe import describe
from ringfl.topology.generators import KINDS, assign_local_addresses, make, torus_shape
from ringfl.topology.io import FORMATS, format_for, load, parse, save, serialize
from ringfl.topology.mixing import (
    MixingChoice,
    metropolis_hastings,
    mixing_choice,
    mixing_matrix,
    spectral_gap,
)
from ringfl.topology.peers import (
    ADDRESS,
    MIXING,
    PUBLIC_KEY,
    RING,
    SELF_WEIGHT,
    WEIGHT,
    peer_index,
    peers,
)
from ringfl.topology.ring import (
    RingSearch,
    find_ring,
    is_hamiltonian_cycle,
    ring_edges,
    ring_order,
    ring_problem,
)
from ringfl.topology.validate import address_problem, validate

__all__ = [
    "ADDRESS",
    "FORMATS",
    "KINDS",
    "MIXING",
    "PUBLIC_KEY",
    "RING",
    "SELF_WEIGHT",
    "WEIGHT",
    "MixingChoice",
    "RingSearch",
    "address_problem",
    "assign_local_addresses",
    "describe",
    "find_ring",
    "format_for",
    "is_hamiltonian_cycle",
    "load",
    "make",
    "metropolis_hastings",
    "mixing_choice",
    "mixing_matrix",
    "parse",
    "peer_index",
    "peers",
    "ring_edges",
    "ring_order",
    "ring_problem",
    "save",
    "serialize",
    "spectral_gap",
    "torus_shape",
    "validate",
]
