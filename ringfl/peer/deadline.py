"""Adaptive deadlines from observed waits (pure; the driver feeds it observations).

A peer waiting in a collective measures the longest silence of each round: the longest
time it went without any message it was waiting for (the first wait of a round includes
the other peers' local training, so slow trainers raise it). The deadline is

    deadline = clamp(k × EWMA(longest silence per round) + margin, min_s, max_s)

with EWMA weight `alpha` for the newest observation; before the first observation it is
`initial_s`. The driver probes a silent peer (PING) `probe_s()` before the deadline (half
the deadline, bounded) and declares it gone if no answer has come when the deadline is
reached: an alive peer whose loop is slow to run (a loaded machine) has half the deadline
to answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfl.errors import ConfigError


@dataclass
class DeadlinePolicy:
    """Settings (seconds). Every peer of a run should use the same ones."""

    k: float = 3.0
    margin_s: float = 0.5
    min_s: float = 1.0
    max_s: float = 30.0
    initial_s: float = 5.0
    alpha: float = 0.3
    probe_min_s: float = 0.5
    probe_max_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("k", "min_s", "max_s", "initial_s", "probe_min_s", "probe_max_s"):
            v = getattr(self, name)
            if not v > 0:
                raise ConfigError(f"deadline {name} must be > 0, got {v!r}")
        if self.margin_s < 0:
            raise ConfigError(f"deadline margin_s must be >= 0, got {self.margin_s!r}")
        if self.min_s > self.max_s:
            raise ConfigError(f"deadline min_s {self.min_s} > max_s {self.max_s}")
        if self.probe_min_s > self.probe_max_s:
            raise ConfigError(
                f"deadline probe_min_s {self.probe_min_s} > probe_max_s {self.probe_max_s}"
            )
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"deadline alpha must be in (0, 1], got {self.alpha!r}")


class AdaptiveDeadline:
    """The current deadline; `observe(silence_s)` once per completed collective."""

    def __init__(self, policy: DeadlinePolicy | None = None) -> None:
        self.policy = policy or DeadlinePolicy()
        self.ewma: float | None = None
        self.observations = 0

    def observe(self, silence_s: float) -> None:
        if not silence_s >= 0:
            return
        a = self.policy.alpha
        self.ewma = silence_s if self.ewma is None else a * silence_s + (1 - a) * self.ewma
        self.observations += 1

    def seconds(self) -> float:
        p = self.policy
        if self.ewma is None:
            return min(max(p.initial_s, p.min_s), p.max_s)
        return min(max(p.k * self.ewma + p.margin_s, p.min_s), p.max_s)

    def probe_s(self) -> float:
        """How long before the deadline a silent peer is probed: half the deadline, within
        [probe_min_s, probe_max_s] and never more than the deadline."""
        p = self.policy
        d = self.seconds()
        return min(max(d / 2, p.probe_min_s), p.probe_max_s, d)


__all__ = ["AdaptiveDeadline", "DeadlinePolicy"]
