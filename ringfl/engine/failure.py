"""The one failure detector: adaptive deadlines from observed waits, probes and
declarations, fed with the current time by its driver (real time in a ZeroMQ peer, virtual
time in the in-memory network). It reads no clock and sends nothing: it answers "probe
these peers" and "declare these peers gone", and the driver does it.

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

from collections.abc import Collection
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Verdict:
    """What the detector asks of its driver now: send a probe (PING) to `probe`, tell the
    collective that `declare` are gone; `stalled`: the awaited peers all answer probes but
    nothing moved for the hard limit (they are declared anyway, so no wait is unbounded);
    `wake_at`: the latest time at which the detector must be asked again."""

    probe: tuple[int, ...] = ()
    declare: tuple[int, ...] = ()
    stalled: bool = False
    wake_at: float = float("inf")


@dataclass
class FailureDetector:
    """Watches one collective run. The silence is the time since the run last made
    progress (`progress(now)`: a message was accepted). When it reaches the deadline minus
    the probe window, every peer the run still waits for is probed; a peer that answers
    (`heard(peer, now)`: any message counts) is alive and left alone for a while; one that
    has not answered when the window closes is declared gone. Silence beyond `hard_limit_s`
    although everyone answers (a protocol stall) declares the awaited peers anyway. The
    longest silence of the run feeds the `AdaptiveDeadline` when the run ends (`close`)."""

    deadline: AdaptiveDeadline
    started: float
    hard_limit_s: float | None = None
    progress_at: float = 0.0
    max_silence: float = 0.0
    lost: set[int] = field(default_factory=set)
    probes: dict[int, tuple[float, float]] = field(default_factory=dict)  # sent at, answer by
    cleared: dict[int, float] = field(default_factory=dict)  # answered a probe at
    last_heard: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.progress_at = self.started
        if self.hard_limit_s is None:
            p = self.deadline.policy
            self.hard_limit_s = 2 * p.max_s + p.probe_max_s

    def progress(self, now: float) -> None:
        """The run accepted a message at `now`."""
        self.max_silence = max(self.max_silence, now - self.progress_at)
        self.progress_at = now

    def heard(self, peer: int, now: float) -> None:
        """Any message from `peer` arrived at `now` (an answer to a probe, or anything)."""
        self.last_heard[peer] = now

    def mark_lost(self, peers: Collection[int]) -> None:
        """`peers` are gone (declared here, or learnt from another peer)."""
        for p in peers:
            self.lost.add(int(p))
            self.probes.pop(int(p), None)

    def poll(self, now: float, expecting: Collection[int]) -> Verdict:
        """Decide at `now`, given the peers the run still waits for."""
        silence = now - self.progress_at
        d = self.deadline
        self.max_silence = max(self.max_silence, min(silence, d.seconds()))
        for p, (sent, _) in list(self.probes.items()):
            if self.last_heard.get(p, float("-inf")) >= sent:
                del self.probes[p]
                self.cleared[p] = now
        expired = tuple(sorted(p for p, (_, by) in self.probes.items() if now >= by))
        if expired:
            self.mark_lost(expired)
            return Verdict(declare=expired, wake_at=now)
        # times are compared as times, never as differences: a driver that comes back
        # exactly at `wake_at` (virtual time) must find the step due
        assert self.hard_limit_s is not None
        if now >= self.progress_at + self.hard_limit_s:
            waiting = tuple(sorted(set(expecting) - self.lost))
            self.mark_lost(waiting)
            self.progress_at = now
            return Verdict(declare=waiting, stalled=True, wake_at=now)
        window = d.probe_s()
        ask_at = d.seconds() - window
        probe: list[int] = []
        if now >= self.progress_at + ask_at:
            for p in sorted(set(expecting) - self.lost):
                if p in self.probes or now < self.cleared.get(p, float("-inf")) + ask_at:
                    continue
                self.probes[p] = (now, now + window)
                probe.append(p)
        wake = [self.progress_at + ask_at] if now < self.progress_at + ask_at else []
        wake += [by for _, by in self.probes.values()]
        wake += [t + ask_at for t in self.cleared.values() if t + ask_at > now]
        wake.append(self.progress_at + self.hard_limit_s)
        return Verdict(probe=tuple(probe), wake_at=min(wake))

    def close(self, now: float) -> None:
        """The run ended at `now`: its longest silence updates the deadline estimate."""
        self.max_silence = max(self.max_silence, now - self.progress_at)
        self.deadline.observe(self.max_silence)


__all__ = ["AdaptiveDeadline", "DeadlinePolicy", "FailureDetector", "Verdict"]
