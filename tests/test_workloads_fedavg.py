"""Neural FedAvg through the workload interface: the secure sum gives the plain FedAvg
model to within the stated resolution, and the model learns."""

from __future__ import annotations

import numpy as np
import torch

from ringfl.data.builtin import load_digits
from ringfl.local import evaluate
from ringfl.models import build_model
from ringfl.workloads.base import plain_sum, run_parties
from ringfl.workloads.fedavg import FedAvgWorkload
from ringfl.workloads.securesum import SimulatedSecureSum


def parties(train):
    idx = np.arange(len(train))
    return [
        FedAvgWorkload(
            build_model("logreg", train.input_shape, 10, seed=1),
            train.subset(idx[i::3]),
            rounds=5,
            lr=0.5,
            steps=20,
            peer=i,
        )
        for i in range(3)
    ]


def test_fedavg_workload_secure_equals_plain_and_learns() -> None:
    torch.set_num_threads(1)
    train, test = load_digits()
    secure = run_parties(parties(train), SimulatedSecureSum(3))
    plain = run_parties(parties(train), plain_sum)
    assert all(np.array_equal(w, secure[0]) for w in secure)
    np.testing.assert_allclose(secure[0], plain[0], atol=1e-6)
    model = build_model("logreg", train.input_shape, 10, seed=1)
    from ringfl.algorithms.base import set_flat

    set_flat(model, secure[0])
    assert evaluate(model, test).accuracy > 0.8
