"""A task's status, derived from its events alone (sans-I/O: no clock, no I/O).

Every node holds the same events of a task (each participant sends the events it
originates to every other participant), so every node derives the same status:

    created → waiting (for approvals) → running → succeeded | failed | cancelled

Event kinds (`data` fields):

| kind | origin | data |
|---|---|---|
| proposed | proposer | spec, nonce, expires |
| vote | each participant | accept, reason, fields (values partners may read) |
| ready | each participant | run, endpoint (where its peer will listen in that run) |
| started | each participant | run, pid |
| finished | each participant | run, status, hash, accuracy, loss, rounds, reason |
| cancel | any participant | reason |
| timeout | any participant | missing (who did not answer before the proposal expired) |

Rules: a cancel wins; a rejection fails the task; without every acceptance by `expires`
(+ `GRACE_S` for votes in flight) the task fails; run k succeeds when every participant
finished it with the same model hash; a scheduled task's next run is due `interval`
after the last participant finished the previous one (the same instant on every node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ringfl.standing.spec import schedule_seconds

STATUSES = ("created", "waiting", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
#: Seconds after `expires` during which votes sent before it may still arrive.
GRACE_S = 5.0


@dataclass
class RunView:
    run: int
    ready: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "starting"
    reason: str = ""
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "status": self.status,
            "reason": self.reason,
            "hash": self.hash,
            "ready": sorted(self.ready),
            "started": sorted(self.started),
            "finished": self.finished,
        }


@dataclass
class TaskView:
    id: str
    spec: dict[str, Any]
    proposer: str
    created: float
    expires: float
    status: str = "created"
    reason: str = ""
    votes: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[RunView] = field(default_factory=list)
    next_run: int | None = None  # the run that should be under way or be started
    next_due: float | None = None  # when it is due (origin clock of the events)

    @property
    def participants(self) -> list[str]:
        return list(self.spec["participants"])

    def run_view(self, k: int) -> RunView | None:
        return next((r for r in self.runs if r.run == k), None)


def derive(events: list[dict[str, Any]], now: float) -> TaskView | None:
    """The task's view from its events (history order); None without a proposal."""
    prop = next((e for e in events if e["kind"] == "proposed"), None)
    if prop is None:
        return None
    d = prop["data"]
    v = TaskView(prop["task"], d["spec"], prop["origin"], prop["time"], d["expires"])
    parts = set(v.participants)
    runs: dict[int, RunView] = {}
    cancel = timeout = None
    for e in events:
        o, k, data = e["origin"], e["kind"], e["data"]
        if o not in parts:
            continue
        if k == "vote":
            v.votes.setdefault(o, {**data, "time": e["time"]})
        elif k in ("ready", "started", "finished"):
            r = runs.setdefault(data["run"], RunView(data["run"]))
            if k == "ready":
                r.ready.setdefault(o, data["endpoint"])
            elif k == "started":
                r.started.setdefault(o, e["time"])
            else:
                r.finished.setdefault(o, {**data, "time": e["time"]})
        elif k == "cancel" and cancel is None:
            cancel = e
        elif k == "timeout" and timeout is None:
            timeout = e
    v.runs = [runs[k] for k in sorted(runs)]
    for r in v.runs:
        _run_status(r, parts)
    rejected = [(p, x) for p, x in sorted(v.votes.items()) if not x.get("accept")]
    missing = sorted(parts - set(v.votes))
    if cancel is not None:
        v.status = "cancelled"
        why = cancel["data"].get("reason") or "no reason given"
        v.reason = f"cancelled by {cancel['origin']}: {why}"
    elif rejected:
        v.status = "failed"
        v.reason = "; ".join(f"rejected by {p}: {x.get('reason', '')}" for p, x in rejected)
    elif missing:
        if timeout is not None or now > v.expires + GRACE_S:
            v.status = "failed"
            v.reason = f"no answer from {', '.join(missing)} before the proposal expired"
        else:
            v.status = "waiting" if v.votes else "created"
    else:
        _running(v, now)
    return v


def _run_status(r: RunView, parts: set[str]) -> None:
    bad = [(p, f) for p, f in sorted(r.finished.items()) if f.get("status") != "succeeded"]
    if bad:
        stopped = all(f.get("status") == "cancelled" for _, f in bad)
        r.status = "cancelled" if stopped else "failed"
        r.reason = "; ".join(f"{p}: {f.get('status')}: {f.get('reason', '')}" for p, f in bad)
    elif set(r.finished) >= parts:
        hashes = {f.get("hash") for f in r.finished.values()}
        if len(hashes) == 1:
            r.status, r.hash = "succeeded", str(hashes.pop())
        else:
            r.status, r.reason = "failed", "participants ended with different model hashes"
    elif r.started:
        r.status = "running"


def _running(v: TaskView, now: float) -> None:
    """Every participant accepted: where the runs stand."""
    spec = v.spec
    if not v.runs:
        v.status, v.next_run = "running", 1
        v.next_due = max(x["time"] for x in v.votes.values())
        return
    last = v.runs[-1]
    if last.status in ("failed", "cancelled"):
        v.status, v.reason = "failed", f"run {last.run} failed: {last.reason}"
    elif last.status == "succeeded":
        more = "schedule" in spec and last.run < spec.get("max_runs", 1 << 30)
        if more:
            v.status, v.next_run = "running", last.run + 1
            done = max(f["time"] for f in last.finished.values())
            v.next_due = done + schedule_seconds(spec["schedule"])
        else:
            v.status = "succeeded"
    else:
        v.status, v.next_run = "running", last.run


__all__ = ["GRACE_S", "STATUSES", "TERMINAL", "RunView", "TaskView", "derive"]
