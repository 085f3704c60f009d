"""The exceptions ringfl raises. Every one of them is a `RingflError`.

The CLI turns a `RingflError` into a one-line message on stderr and exit status 1
(bad input); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RingflError(Exception):
    """Base class: a problem the user can fix (bad file, bad config, dead peer)."""


class TopologyError(RingflError):
    """A topology file or graph is invalid. The message names the file and node/edge."""


class ConfigError(RingflError):
    """A configuration value is wrong. The message names the field."""


class WireError(RingflError):
    """A frame from the network was rejected (malformed, oversized, unexpected)."""


class PeerTimeout(RingflError):
    """A neighbour did not answer before the deadline. `peers` names who is missing."""

    def __init__(self, message: str, peers: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.peers = peers


class SecureAggregationError(RingflError):
    """Secure aggregation cannot complete (too few survivors, overflow risk, bad keys)."""
