"""The Flower side of `bench_flower.py`: the same task run by Flower's simulation engine
(Ray), with FedAvg (plain) or FedAvg under the SecAgg+ workflow (secure).

    python experiments/flower_side.py --clients 8 --rounds 20 --epochs 1 [--secure] --out r.json

Run it with a Python that has `flwr[simulation]` (see FLOWER.md); ringfl must be
importable too (PYTHONPATH), because both sides share, on purpose, everything but the
framework: ringfl's data split (`builtin_split`), initial model (`build_model`, same
seed), local trainer (`LocalTrainer`: the same SGD and the same mini-batches per client
and round) and test-set evaluation. Server-side (centralized) evaluation after every
round, no client-side evaluation, every client in every round.

Bytes: a client mod measures every message a client receives and sends, serialised as
Flower's wire protobuf (`message_to_proto(...).ByteSize()`), into one JSON-lines file per
process under $BENCH_BYTES_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

MODULE_DIR = Path(__file__).resolve().parent


def bench_config(clients: int, rounds: int, epochs: int | None, steps: int | None, seed: int):
    """The ringfl config both sides train by (see bench_flower.py)."""
    from ringfl.config import (
        AlgorithmConfig,
        Config,
        DataConfig,
        ModelConfig,
        PartitionConfig,
        TrainConfig,
    )

    return Config(
        seed=seed,
        eval_every=1,
        data=DataConfig(dataset="mnist"),
        partition=PartitionConfig(name="dirichlet", alpha=0.5, min_size=10),
        model=ModelConfig(name="mlp"),
        train=TrainConfig(
            rounds=rounds,
            local_epochs=epochs,
            local_steps=steps,
            batch_size=64,
            lr=0.05,
            momentum=0.0,
        ),
        algorithm=AlgorithmConfig(name="ring", secure=False),
    )


def write_split(clients: int, seed: int, folder: Path) -> None:
    """ringfl's Dirichlet split of MNIST, one file pair per client plus the test set, so
    that each client loads only its own partition (as a Flower client would)."""
    from ringfl.data.parties import builtin_split

    parts, test, _ = builtin_split(bench_config(clients, 1, 1, None, seed), clients)
    for i, d in enumerate(parts):
        np.save(folder / f"x{i}.npy", d.x)
        np.save(folder / f"y{i}.npy", d.y)
    np.save(folder / "xtest.npy", test.x)
    np.save(folder / "ytest.npy", test.y)


def partition(folder: str, pid: int):
    from ringfl.data import Dataset

    d = Path(folder)
    return Dataset(np.load(d / f"x{pid}.npy"), np.load(d / f"y{pid}.npy"), 10, f"p{pid}")


@lru_cache(maxsize=1)
def test_set(folder: str):
    from ringfl.data import Dataset

    d = Path(folder)
    return Dataset(np.load(d / "xtest.npy"), np.load(d / "ytest.npy"), 10, "test")


def new_model(seed: int):
    from ringfl.models import build_model

    return build_model("mlp", (1, 28, 28), 10, seed)


def to_arrays(model) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def load_arrays(model, arrays) -> None:
    import torch

    with torch.no_grad():
        for v, a in zip(model.state_dict().values(), arrays, strict=True):
            v.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(v.shape))


def message_bytes(msg) -> int:
    from flwr.common.serde import message_to_proto

    return int(message_to_proto(msg).ByteSize())


def count_bytes(msg, ctxt, call_next):
    """Client mod: log the bytes this client received and sent (Flower's wire format)."""
    received = message_bytes(msg)
    reply = call_next(msg, ctxt)
    sent = message_bytes(reply)
    out = Path(os.environ["BENCH_BYTES_DIR"]) / f"{os.getpid()}.jsonl"
    with out.open("a") as f:
        f.write(json.dumps({"kind": msg.metadata.message_type, "in": received, "out": sent}) + "\n")
    return reply


def client_app(folder: str, epochs: int | None, steps: int | None, seed: int, secure: bool):
    import torch
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    from ringfl.local import LocalTrainer

    class Client(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):
            torch.set_num_threads(1)  # one thread per worker, as ringfl's workers
            data = partition(folder, self.pid)
            model = new_model(seed)
            load_arrays(model, parameters)
            trainer = LocalTrainer(
                model, data, batch_size=64, lr=0.05, momentum=0.0, seed=seed, peer=self.pid
            )
            s = trainer.train(int(config["round"]), epochs=epochs, steps=steps)
            return to_arrays(model), len(data), {"loss": float(s.loss)}

    def client_fn(context):
        return Client(int(context.node_config["partition-id"])).to_client()

    mods = [count_bytes, secaggplus_mod] if secure else [count_bytes]
    return ClientApp(client_fn=client_fn, mods=mods)


def server_app(folder: str, clients: int, rounds: int, seed: int, secure: bool, history: list):
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from ringfl.local import evaluate

    def evaluate_fn(server_round, arrays, config):
        test = test_set(folder)
        model = new_model(seed)
        load_arrays(model, arrays)
        ev = evaluate(model, test)
        history.append({"round": server_round, "accuracy": ev.accuracy, "loss": ev.loss})
        return ev.loss, {"accuracy": ev.accuracy}

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_available_clients=clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda r: {"round": r - 1},  # ringfl's round index: same batches
        initial_parameters=ndarrays_to_parameters(to_arrays(new_model(seed))),
    )
    app = ServerApp()

    @app.main()
    def main(grid, context):
        ctx = LegacyContext(
            context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
        )
        if secure:
            # comparable to ringfl's secure ring: shares to (degree + 1) clients, about
            # half of them needed (ringfl: complete graph up to 8 peers, degree 19 at 100;
            # threshold N/2 + 1). Flower wants an odd number of shares below N.
            shares = clients if clients <= 8 else 21
            fit = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=shares // 2 + 1)
            DefaultWorkflow(fit_workflow=fit)(grid, ctx)
        else:
            DefaultWorkflow()(grid, ctx)

    return app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--secure", action="store_true")
    ap.add_argument("--cpus", type=int, default=2, help="Ray CPUs (one per client actor)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    # by module name, so that Ray's workers import these functions instead of unpickling
    # copies of __main__'s
    import flower_side as me
    from flwr.simulation import run_simulation

    folder = tempfile.mkdtemp(prefix="flower-split-")
    me.write_split(args.clients, args.seed, Path(folder))
    history: list = []
    run_simulation(
        server_app=me.server_app(
            folder, args.clients, args.rounds, args.seed, args.secure, history
        ),
        client_app=me.client_app(folder, args.epochs, args.steps, args.seed, args.secure),
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False, "log_to_driver": True},
        },
    )
    shutil.rmtree(folder, ignore_errors=True)
    final = history[-1] if history else {"accuracy": float("nan"), "loss": float("nan")}
    Path(args.out).write_text(
        json.dumps(
            {
                "side": "flower",
                "final_accuracy": final["accuracy"],
                "final_loss": final["loss"],
                "history": history,
                "inner_s": time.perf_counter() - t0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
