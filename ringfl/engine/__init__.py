"""The round engine: one party's rounds (workload + algorithm + membership + failure
policy) as sans-I/O components that the simulator and real peers drive alike.

- `round`: `RoundEngine`, the round itself; events in, machines and records out.
- `workload`: what a party computes locally (`Workload`: `NeuralWorkload`, and
  `StatisticsWorkload` around a `Statistics` job of `ringfl.workloads`).
- `scale`: the agreed power-of-two scale of a statistics sum (64-bit fixed point).
- `membership`: who takes part in which round (join flags, majority rule, handovers).
- `failure`: the one failure detector (adaptive deadline, probes, declarations).
- `faults`: fault schedules, the same for the simulator and real peers.
- `sums`: the collectives an engine runs (secure/plain ring sum, gossip step, star).
- `build`: an engine for one party of a topology, from a config.

Import the submodules; this package imports nothing itself (the config needs `faults`).
"""
