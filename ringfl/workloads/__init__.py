"""Tabular workloads on the secure sum: analytics, Newton logistic regression, histogram
GBDT and model-quality metrics (guide: docs/workloads.md).

Every workload is a sans-I/O object per party (`ringfl.workloads.base.Workload`): it
computes a flat vector of sufficient statistics from its own rows, a secure sum adds the
vectors of all parties, and every party applies the same deterministic update to the sum.
"""
