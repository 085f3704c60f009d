"""ringfl: decentralized, server-free federated learning over ZeroMQ rings and gossip graphs."""

__version__ = "0.1.0"
