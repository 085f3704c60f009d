"""The `ringfl` command. Each sub-command lives in its own module under `ringfl.commands`
and exposes `register(subparsers)`; the module's handler returns an exit status.

Exit status: 0 fine, 1 invalid input (a `RingflError`, one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


if __name__ == "__main__":
    raise SystemExit(main())
