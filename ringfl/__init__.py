"""ringfl: decentralized, server-free federated learning over ZeroMQ rings and gossip graphs.

result = ringfl.simulate(graph, config)            # N parties in one process
status = ringfl.launch("ring.json", "run.toml",    # real local peer processes
                       model=factory, data=loader)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def simulate(*args: Any, **kwargs: Any) -> Any:
    """`ringfl.sim.simulate` (imported on first use: torch is slow to import)."""
    from ringfl.sim import simulate as run

    return run(*args, **kwargs)


def launch(*args: Any, **kwargs: Any) -> Any:
    """`ringfl.peer.spawn.launch` (imported on first use)."""
    from ringfl.peer.spawn import launch as run

    return run(*args, **kwargs)


def __getattr__(name: str) -> Any:  # lazy: `import ringfl` stays light
    if name == "Node":
        from ringfl.standing.client import Node

        return Node
    raise AttributeError(f"module 'ringfl' has no attribute {name!r}")


__all__ = ["Node", "__version__", "launch", "simulate"]
