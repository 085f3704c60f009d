"""The `ringfl` command. Each sub-command lives in its own module under `ringfl.commands`
and exposes `register(subparsers)`; the module's handler returns an exit status.

Exit status: 0 fine, 1 invalid input (a `RingflError`, one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from ringfl import __version__
from ringfl.errors import RingflError

# One line per sub-command module; each has `register(subparsers)`.
COMMAND_MODULES = (
    "ringfl.commands.demo",
    "ringfl.commands.topology",
    "ringfl.commands.simulate",
    "ringfl.commands.peer",
    "ringfl.commands.tabular",
    "ringfl.commands.node",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringfl", description="Decentralized, server-free federated learning."
    )
    parser.add_argument("--version", action="version", version=f"ringfl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except RingflError as exc:
        print(f"ringfl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ringfl: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `ringfl` program (console script and `python -m ringfl`): `main`, then exit
    with its status.

    Before the interpreter shuts down, every live object moves to the garbage collector's
    permanent generation (`gc.freeze`): its final collections would otherwise walk all of
    torch's objects once more, 0.4–0.6 s of CPU per process here (every peer process of a
    ring pays it). Atexit handlers and module teardown still run; what frozen reference
    cycles still hold is returned to the system with the process."""
    status = main()
    gc.freeze()
    raise SystemExit(status)


if __name__ == "__main__":
    run()
