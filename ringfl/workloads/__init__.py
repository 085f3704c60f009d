"""Statistics jobs on the round engine: analytics, Newton logistic regression, histogram
GBDT and model-quality metrics (guide: docs/workloads.md).

Every job is a sans-I/O object per party (`ringfl.engine.workload.Statistics`): it
computes a flat vector of sufficient statistics from its own rows, the engine's secure
ring sum adds the vectors of all parties, and every party applies the same deterministic
update to the sum. `ringfl.workloads.run` runs jobs on the simulator or as a real peer
(the engine's two drivers), or centrally as the reference.
"""
