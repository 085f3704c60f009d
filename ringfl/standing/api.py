"""The node's local HTTP JSON API and web dashboard (Starlette, served by uvicorn).

Bound to 127.0.0.1 by default. Every `/api/...` route except `/api/health` needs
`Authorization: Bearer TOKEN`, the token in the node's token file (mode 0600); without
it: 401. A body that is not JSON, or a spec with a bad field: 400 with `field` naming it.

| method | path | what |
|---|---|---|
| GET | /api/health | {"ok", "node"} (no token) |
| GET | /api/node | this node, its parties with liveness |
| GET | /api/tasks | task list (status, progress, proposer, participants) |
| POST | /api/tasks | body: a task spec (JSON) → {"id"} |
| GET | /api/tasks/{id} | detail: spec, votes, runs, history, local metrics, result |
| GET | /api/tasks/{id}/wait?timeout=S | detail, once the task is terminal (or after S; a task not known yet is waited for) |
| GET | /api/tasks/{id}/logs?after=E.L&wait=S | {"lines", "next"}: new lines after cursor E.L (events, peer lines) |
| POST | /api/tasks/{id}/cancel | cancel (body optional: {"reason"}) |
| GET | /api/tasks/{id}/runs/{k}/{model,metrics,predictions,log} | this party's files |
| GET | /api/datasets | catalogs: names and schemas of every party |
| GET | /api/refusals | refused events (newest first) |
| GET | / | the dashboard (static files shipped in the package) |
"""

from __future__ import annotations

import hmac
import json
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ringfl.standing.lifecycle import TERMINAL
from ringfl.standing.service import NodeService
from ringfl.standing.spec import SpecError

STATIC = Path(__file__).with_name("dashboard")
MAX_BODY = 256 * 1024
MAX_WAIT_S = 60.0


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def _float(request: Request, name: str, default: float, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise SpecError(name, f"query parameter {name} must be a number") from None
    if not 0 <= v <= hi:
        raise SpecError(name, f"query parameter {name} must be in [0, {hi:g}]")
    return v


async def _json_body(request: Request, *, optional: bool = False) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise SpecError("body", f"larger than {MAX_BODY} bytes")
    if not raw.strip() and optional:
        return {}
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError("body", f"not valid JSON: {exc}") from None


class _TokenGate:
    """ASGI middleware: `/api/...` (except `/api/health`) needs the bearer token; 401 else."""

    def __init__(self, app: Any, authorized: Any) -> None:
        self.app = app
        self.authorized = authorized

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            guarded = path.startswith("/api/") and path != "/api/health"
            if guarded and not self.authorized(Request(scope)):
                resp = _error(401, "missing or wrong token (Authorization: Bearer TOKEN)")
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(service: NodeService, token: str) -> Starlette:
    """The Starlette app of one node."""

    def authorized(request: Request) -> bool:
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    def task_or_404(task: str) -> dict[str, Any] | None:
        try:
            return service.detail(task)
        except KeyError:
            return None

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "node": service.me})

    async def node(request: Request) -> Response:
        return JSONResponse(
            {"node": service.me, "parties": await run_in_threadpool(service.parties)}
        )

    async def tasks(request: Request) -> Response:
        if request.method == "POST":
            spec = await _json_body(request)
            tid = await run_in_threadpool(service.submit, spec)
            return JSONResponse({"id": tid}, status_code=201)
        return JSONResponse({"tasks": await run_in_threadpool(service.tasks)})

    async def task(request: Request) -> Response:
        d = await run_in_threadpool(task_or_404, request.path_params["id"])
        return JSONResponse(d) if d is not None else _error(404, "no such task", "id")

    async def wait(request: Request) -> Response:
        tid = request.path_params["id"]
        timeout = _float(request, "timeout", 30.0, MAX_WAIT_S)

        def block() -> dict[str, Any] | None:
            end = time.monotonic() + timeout
            while True:
                seen = service.version  # read before the state: no change slips between
                d = task_or_404(tid)  # a task proposed elsewhere may not be here yet
                if (d is not None and d["status"] in TERMINAL) or time.monotonic() >= end:
                    return d
                service.wait_change(seen, end - time.monotonic())

        d = await run_in_threadpool(block)
        return JSONResponse(d) if d is not None else _error(404, "no such task", "id")

    async def logs(request: Request) -> Response:
        tid = request.path_params["id"]
        raw = request.query_params.get("after", "0.0")
        try:
            e0, l0 = (int(x) for x in raw.split(".", 1)) if "." in raw else (int(raw), 0)
        except ValueError:
            raise SpecError("after", "a cursor 'E.L' from an earlier answer's next") from None
        wait_s = _float(request, "wait", 0.0, MAX_WAIT_S)

        def block() -> dict[str, Any] | None:
            end = time.monotonic() + wait_s
            while True:
                seen = service.version
                d = task_or_404(tid)
                if d is None:
                    return None
                events, peer = service.log_lines(tid)
                new = events[e0:] + peer[l0:]
                if new or d["status"] in TERMINAL or time.monotonic() >= end:
                    nxt = f"{len(events)}.{len(peer)}"
                    return {"lines": new, "next": nxt, "status": d["status"]}
                # peer output grows without events: look again at least every 0.25 s
                service.wait_change(seen, min(0.25, end - time.monotonic()))

        d = await run_in_threadpool(block)
        return JSONResponse(d) if d is not None else _error(404, "no such task", "id")

    async def cancel(request: Request) -> Response:
        body = await _json_body(request, optional=True)
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise SpecError("reason", "a string")
        try:
            d = await run_in_threadpool(
                service.cancel, request.path_params["id"], body.get("reason", "")
            )
        except KeyError:
            return _error(404, "no such task", "id")
        return JSONResponse(d)

    async def run_file(request: Request) -> Response:
        p = request.path_params
        try:
            run = int(p["run"])
        except ValueError:
            return _error(400, "run must be an integer", "run")
        path = service.run_file(p["id"], run, p["what"])
        if path is None:
            return _error(
                404, f"no {p['what']} for run {run} of task {p['id']} on this node", "what"
            )
        name = f"{p['id']}-run{run}-{service.me}-{path.name}"
        return FileResponse(path, filename=name)

    async def datasets(request: Request) -> Response:
        return JSONResponse({"datasets": await run_in_threadpool(service.datasets)})

    async def refusals(request: Request) -> Response:
        return JSONResponse({"refusals": await run_in_threadpool(service.refusals)})

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/api/health", health),
        Route("/api/node", node),
        Route("/api/tasks", tasks, methods=["GET", "POST"]),
        Route("/api/tasks/{id}", task),
        Route("/api/tasks/{id}/wait", wait),
        Route("/api/tasks/{id}/logs", logs),
        Route("/api/tasks/{id}/cancel", cancel, methods=["POST"]),
        Route("/api/tasks/{id}/runs/{run}/{what}", run_file),
        Route("/api/datasets", datasets),
        Route("/api/refusals", refusals),
        Route("/", index),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]

    async def spec_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SpecError)
        return _error(400, str(exc), exc.field)

    app = Starlette(
        routes=routes,
        exception_handlers={SpecError: spec_error},
        middleware=[Middleware(_TokenGate, authorized=authorized)],
    )
    return app


__all__ = ["create_app"]
