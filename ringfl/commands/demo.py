"""`ringfl demo`: the main job on its embedded default.

Until the trainer lands this reports a bundled topology; it grows into the
8-peer secure ring on MNIST vs the centralized baseline.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded default experiment")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print("ringfl demo: the trainer has not landed yet.")
    return 0
