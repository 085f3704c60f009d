"""The server-based FedAvg baseline (a star: one hub averages, the classic parameter
server), run through the same engine and wire messages as the ring. The parties' side is
the ring's weighted-delta payload with raw counts as weights ([n_i * delta_i, n_i]: the hub
sees every contribution in the clear anyway), summed by the hub (`ringfl.collective.star`)
instead of a ring all-reduce. The hub is an auxiliary participant of the engine: it holds
no data, trains nothing and contributes nothing (weight 0), like hivemind's AUX mode.
"""

from __future__ import annotations

from ringfl.algorithms.base import Collective
from ringfl.algorithms.ring import RingAverage


class ServerAverage(RingAverage):
    """FedAvg through a hub: the hub sums [n_i * delta_i, n_i] and sends it back. The
    same payload and update as the ring's; only the collective that sums differs."""

    name = "server"
    collective: Collective = "star"
