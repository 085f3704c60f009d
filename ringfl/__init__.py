"""ringfl: decentralized, server-free federated learning over ZeroMQ rings and gossip graphs."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import ringfl` stays light
    if name == "Node":
        from ringfl.standing.client import Node

        return Node
    raise AttributeError(f"module 'ringfl' has no attribute {name!r}")
