"""Decentralized SGD (D-PSGD) by gossip: local steps, then one mixing step
x_i <- sum_j W_ij x_j with the topology's mixing matrix (Metropolis-Hastings by default),
through `NeighbourAverage`. Models differ between peers; the simulator reports the
consensus distance mean_i ||x_i - mean(x)||.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ringfl.algorithms.base import get_flat, set_flat
from ringfl.collective.events import Machine
from ringfl.collective.gossip import NeighbourAverage

if TYPE_CHECKING:
    from ringfl.learner import Learner


class GossipAverage:
    """One neighbour-averaging step per round with the row W[peer, :] of the mixing matrix."""

    name = "gossip"

    def __init__(self, weights_row: Mapping[int, float]) -> None:
        self.weights_row = {int(j): float(w) for j, w in weights_row.items()}

    def setup(self, learner: Learner) -> None:
        return None

    def finish_setup(self, learner: Learner, result: Any) -> None:
        pass

    def begin_round(self, learner: Learner, round_index: int) -> None:
        pass

    def machine(self, learner: Learner, round_index: int) -> Machine:
        return NeighbourAverage(
            learner.peer,
            self.weights_row,
            get_flat(learner.model),
            session=learner.session,
            round=round_index,
        )

    def apply(self, learner: Learner, round_index: int, result: Any) -> None:
        set_flat(learner.model, np.asarray(result))
