"""Regenerate the ready topology files, the drawing and the table in README.md with the
`ringfl topology` CLI. Run from anywhere: `python topology/regenerate.py`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (file, make arguments); each file gets its own loopback port range below 32768.
FILES = [
    ("ring-4.json", ["ring", "-n", "4", "--local-ports", "23000"]),
    ("ring-8.json", ["ring", "-n", "8", "--local-ports", "23100"]),
    ("torus-16.json", ["torus", "-n", "16", "--local-ports", "23200"]),
    ("exponential-16.json", ["exponential", "-n", "16", "--local-ports", "23300"]),
    ("complete-8.json", ["complete", "-n", "8", "--local-ports", "23400"]),
    ("star-8.json", ["star", "-n", "8", "--local-ports", "23500"]),
    (
        "random-regular-32.json",
        ["random-regular", "-n", "32", "-k", "4", "--seed", "0", "--local-ports", "23600"],
    ),
]
DRAWING = "torus-16.png"
BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def ringfl(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "ringfl", "topology", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def main() -> None:
    for name, args in FILES:
        print(ringfl("make", *args, "-o", f"topology/{name}"), end="")
    print(ringfl("draw", "topology/torus-16.json", "-o", f"topology/{DRAWING}"), end="")
    table = ringfl("check", "--table", *(f"topology/{name}" for name, _ in FILES))
    readme = HERE / "README.md"
    text = readme.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    print(table, end="")


if __name__ == "__main__":
    main()
