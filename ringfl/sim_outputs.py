"""What a simulation writes: metrics (JSON lines and CSV), membership per round, summary,
config, partition, and the accuracy plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringfl.sim import SimResult


def write_outputs(result: SimResult, out: Path) -> list[Path]:
    """metrics.jsonl, metrics.csv, rounds.jsonl (membership per round), summary.json,
    config.json, partition.csv/json and plots."""
    from ringfl.sim import METRIC_FIELDS

    out.mkdir(parents=True, exist_ok=True)
    files = [out / n for n in ("metrics.jsonl", "metrics.csv", "summary.json", "config.json")]
    with open(files[0], "w") as f:
        for row in result.metrics:
            f.write(json.dumps(row) + "\n")
    with open(out / "rounds.jsonl", "w") as f:
        for row in result.rounds:
            f.write(json.dumps(row) + "\n")
    files.append(out / "rounds.jsonl")
    with open(files[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRIC_FIELDS))
        w.writeheader()
        for row in result.metrics:
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    files[2].write_text(json.dumps(result.summary(), indent=1) + "\n")
    files[3].write_text(json.dumps(result.config.to_dict(), indent=1) + "\n")
    if result.data is not None:
        result.data.summary.save_csv(out / "partition.csv")
        result.data.summary.save_json(out / "partition.json")
        files += [out / "partition.csv", out / "partition.json"]
    files += plot_metrics(result, out)
    result.out_dir = out
    result.files = files
    return files


def plot_metrics(result: SimResult, out: Path) -> list[Path]:
    """accuracy_vs_round.png, accuracy_vs_bytes.png and accuracy_vs_time.png (time to
    accuracy on the virtual clock), with the centralized baseline as a horizontal
    reference line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    label = (
        result.algorithm + (" (secure)" if result.secure else "") + f", {result.num_peers} peers"
    )
    shown = [m for m in result.metrics if m["accuracy"] is not None]
    rounds = [m["round"] for m in shown]
    acc = [100 * m["accuracy"] for m in shown]
    mb = [m["cum_bytes_per_peer"] / 1e6 for m in shown]
    secs = [m["time_s"] for m in shown]
    paths = []
    for name, xs, xlabel in (
        ("accuracy_vs_round.png", rounds, "round"),
        ("accuracy_vs_bytes.png", mb, "MB sent per peer"),
        ("accuracy_vs_time.png", secs, "simulated seconds"),
    ):
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(xs, acc, marker="o", ms=3, label=label)
        if result.algorithm == "gossip":
            ax.plot(
                xs,
                [100 * m["mean_model_accuracy"] for m in shown],
                ls="--",
                label="gossip: mean model",
            )
        if result.baseline is not None:
            ax.axhline(
                100 * result.baseline.accuracy,
                color="k",
                ls=":",
                label=f"centralized, same sample budget ({100 * result.baseline.accuracy:.2f}%)",
            )
        if xlabel == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / name)
        paths.append(out / name)
    return paths


__all__ = ["plot_metrics", "write_outputs"]
