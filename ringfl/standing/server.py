"""`ringfl node serve`: the node service plus its HTTP API under uvicorn, until stopped.

Writes into the state folder: `node.db` (SQLite), `node.log`, `api.token` (mode 0600,
made once) and `api.json` (the API's URL and the pid, rewritten at each start; removed at
a clean stop). SIGINT/SIGTERM stop the node cleanly; its peers are told to stop and resume
(rejoining their runs) when the node starts again.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ringfl.errors import ConfigError
from ringfl.standing.service import NodeOptions, NodeService, echo, new_token


def _listen(http: str) -> socket.socket:
    host, sep, port = http.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--http {http!r}: expected HOST:PORT (port 0 picks a free one)")
    s = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        raise ConfigError(f"--http {http}: cannot bind: {exc}") from None
    s.listen(128)
    return s


def serve(opts: NodeOptions, http: str = "127.0.0.1:0", *, quiet: bool = False) -> int:
    """Run one node until SIGINT/SIGTERM. Returns the exit status."""
    import uvicorn

    from ringfl.standing.api import create_app

    service = NodeService(opts, log=None if quiet else echo)
    state = Path(opts.state)
    token = new_token(state / "api.token")
    sock = _listen(http)
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    app = create_app(service, token)
    service.start()
    info = state / "api.json"
    tmp = state / ".api.json.tmp"
    tmp.write_text(json.dumps({"url": url, "node": service.me, "pid": os.getpid()}) + "\n")
    os.replace(tmp, info)
    service.log(f"API and dashboard at {url}/  (token in {state / 'api.token'})")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        service.log(f"node {service.me} stopping")
        service.stop()
        info.unlink(missing_ok=True)
    return 0


__all__ = ["serve"]
