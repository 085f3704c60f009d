"""`ringfl.Node`: a Python client for a node's local API, shaped like Delta's.

    import ringfl
    node = ringfl.Node("http://127.0.0.1:8701", token_file="three/a/state/api.token")
    task_id = node.create_task("task.toml")      # a path, TOML/JSON text, or a dict
    for line in node.trace(task_id):             # the task's log until it ends
        print(line)
    node.wait(task_id)                           # the task's detail once it has ended
    node.result(task_id)                         # {"run", "hash", "accuracy", ...}
    node.tasks(), node.datasets()

`Node.local(state_dir)` reads the URL and the token a running node wrote into its state
folder. Errors from the node raise `NodeError` with the HTTP status and the field named.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ringfl.errors import RingflError
from ringfl.standing.lifecycle import TERMINAL

TOKEN_ENV = "RINGFL_NODE_TOKEN"


class NodeError(RingflError):
    """The node answered with an error. `status`: HTTP status; `field`: the bad field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.field = field


class Node:
    """A client of one node's API at `url` (see the module docstring). The token: `token`,
    else the file `token_file`, else $RINGFL_NODE_TOKEN."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float = 70.0,
    ) -> None:
        self.url = url.rstrip("/")
        if token is None and token_file is not None:
            token = Path(token_file).read_text().strip()
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self.timeout = timeout

    @classmethod
    def local(cls, state: str | os.PathLike[str]) -> Node:
        """The node whose state folder is `state` (it must be running)."""
        state = Path(state)
        try:
            info = json.loads((state / "api.json").read_text())
        except (OSError, ValueError):
            raise RingflError(f"{state}/api.json: no running node found there") from None
        return cls(info["url"], token_file=state / "api.token")

    # -- HTTP -------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                content = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
            except ValueError:
                err = {"error": exc.reason}
            raise NodeError(exc.code, err.get("error", ""), err.get("field")) from None
        except urllib.error.URLError as exc:
            raise RingflError(f"{self.url}: cannot reach the node: {exc.reason}") from None
        return content if raw else json.loads(content)

    # -- Delta-shaped calls ------------------------------------------------------------

    def create_task(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> str:
        """Propose a task; `spec` is a dict, TOML/JSON text, or a path to a spec file.
        Returns the task id. A bad spec raises NodeError naming the field."""
        from ringfl.standing.spec import load_spec_file, load_spec_text

        if isinstance(spec, Mapping):
            body = dict(spec)
        elif isinstance(spec, os.PathLike) or (
            isinstance(spec, str) and "\n" not in spec and Path(spec).is_file()
        ):
            body = load_spec_file(Path(spec))
        else:
            body = load_spec_text(str(spec))
        return str(self.request("POST", "/api/tasks", body)["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/tasks/{task_id}")

    def tasks(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/tasks")["tasks"]

    def datasets(self) -> dict[str, Any]:
        """Every party's catalog: names and schemas (never paths or rows)."""
        return self.request("GET", "/api/datasets")["datasets"]

    def parties(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/node")["parties"]

    def refusals(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/refusals")["refusals"]

    def cancel(self, task_id: str, reason: str = "") -> dict[str, Any]:
        return self.request("POST", f"/api/tasks/{task_id}/cancel", {"reason": reason})

    def trace(
        self, task_id: str, *, follow: bool = True, timeout: float | None = None
    ) -> Iterator[str]:
        """The task's log lines (history, then this node's peer output); with `follow`,
        keeps yielding new lines until the task has ended (or `timeout` s passed)."""
        after = "0.0"  # an opaque cursor: events seen, peer log lines seen
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = (
                0
                if not follow
                else 20.0
                if end is None
                else max(0.0, min(20.0, end - time.monotonic()))
            )
            r = self.request("GET", f"/api/tasks/{task_id}/logs?after={after}&wait={wait:.2f}")
            yield from r["lines"]
            after = r["next"]
            if (
                not follow
                or r["status"] in TERMINAL
                or (end is not None and time.monotonic() >= end)
            ):
                if follow and r["status"] in TERMINAL:
                    last = self.request("GET", f"/api/tasks/{task_id}/logs?after={after}")
                    yield from last["lines"]
                return

    def wait(self, task_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The task's detail once it has ended; raises TimeoutError after `timeout` s.
        A task proposed by another party is waited for until it arrives here."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            try:
                d = self.request(
                    "GET", f"/api/tasks/{task_id}/wait?timeout={max(0.0, min(left, 30.0)):.2f}"
                )
            except NodeError as exc:
                if exc.status != 404 or left <= 0:
                    raise
                continue  # the server waited (up to 30 s) and the task is still unknown
            if d["status"] in TERMINAL:
                return d
            if left <= 0:
                raise TimeoutError(f"task {task_id} is still {d['status']} after {timeout:g} s")

    def result(self, task_id: str) -> dict[str, Any] | None:
        """The last successful run's result (run, model hash, accuracy, loss, per party);
        None while no run has succeeded."""
        return self.task(task_id)["result"]

    def download(
        self, task_id: str, what: str, dest: str | os.PathLike[str], run: int | None = None
    ) -> Path:
        """Save this party's `model` (npz), `metrics` (jsonl), `predictions` (csv) or `log`."""
        if run is None:
            res = self.result(task_id)
            run = res["run"] if res else max(int(k) for k in self.task(task_id)["local"])
        data = self.request("GET", f"/api/tasks/{task_id}/runs/{run}/{what}", raw=True)
        dest = Path(dest)
        dest.write_bytes(data)
        return dest


__all__ = ["Node", "NodeError"]
