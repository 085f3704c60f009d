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
    check_mixing,
    graph_spectral_gap,
    metropolis_hastings,
    metropolis_hastings_rows,
    mixing_choice,
    mixing_decision,
    mixing_matrix,
    mixing_rows,
    rows_spectral_gap,
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
    "check_mixing",
    "describe",
    "find_ring",
    "format_for",
    "graph_spectral_gap",
    "is_hamiltonian_cycle",
    "load",
    "make",
    "metropolis_hastings",
    "metropolis_hastings_rows",
    "mixing_choice",
    "mixing_decision",
    "mixing_matrix",
    "mixing_rows",
    "parse",
    "peer_index",
    "peers",
    "ring_edges",
    "ring_order",
    "ring_problem",
    "rows_spectral_gap",
    "save",
    "serialize",
    "spectral_gap",
    "torus_shape",
    "validate",
]
