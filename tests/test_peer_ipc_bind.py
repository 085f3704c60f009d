"""An ipc:// address that names an existing file that is not a socket is refused (libzmq
would delete the file when binding), by the transport and by a real peer process, with a
message naming the node and the path; the file survives. A stale socket is still reused."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from ringfl.errors import ConfigError
from ringfl.transport.zmq import ZmqPeer, check_ipc_bind
from tests.peer_util import Ring, cli, env, short_dir

PRECIOUS = b"do not delete me\n"


def test_transport_refuses_a_regular_file_and_keeps_it() -> None:
    d = short_dir()
    try:
        f = d / "precious"
        f.write_bytes(PRECIOUS)
        with pytest.raises(
            ConfigError,
            match=rf"^peer 0: refusing to bind ipc://{f}: {f} exists and is a regular file, "
            r"not a socket \(binding would delete it\)",
        ):
            ZmqPeer(0, {0: f"ipc://{f}"})
        assert f.read_bytes() == PRECIOUS
        (d / "sub").mkdir()
        os.symlink(f, d / "link")
        with pytest.raises(ConfigError, match="is a directory"):
            check_ipc_bind(f"ipc://{d / 'sub'}", "node 'x'")
        with pytest.raises(ConfigError, match="is a symbolic link"):
            check_ipc_bind(f"ipc://{d / 'link'}", "node 'x'")
        assert f.read_bytes() == PRECIOUS and (d / "sub").is_dir()
        # tcp, a path that does not exist yet, ipc wildcards and abstract names pass
        for ok in ("tcp://127.0.0.1:0", f"ipc://{d}/new.sock", "ipc://*", "ipc://@ringfl-x"):
            check_ipc_bind(ok, "peer 0")
    finally:
        for p in sorted(d.iterdir()):
            p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
        d.rmdir()


def test_a_stale_socket_file_is_reused() -> None:
    d = short_dir()
    path = d / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the socket file stays behind, as after a crash
    try:
        with ZmqPeer(0, {0: f"ipc://{path}"}) as peer:
            assert peer.address == f"ipc://{path}"
    finally:
        path.unlink(missing_ok=True)
        d.rmdir()


@pytest.mark.parametrize("how", ["topology", "--bind"])
def test_peer_process_refuses_and_the_file_survives(how: str) -> None:
    ring = Ring(3, secure=False)
    try:
        if how == "topology":  # node 1's own address in the topology is a regular file
            target = ring.dir / "p1.sock"
            extra: tuple[str, ...] = ()
        else:
            target = ring.dir / "notes.txt"
            extra = ("--bind", f"ipc://{target}")
        target.write_bytes(PRECIOUS)
        done = subprocess.run(
            cli("peer", *ring.args("--node", "1", "--out", str(ring.out), *extra)),
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("ringfl: error: node 1: refusing to bind "), line  # int ids
        assert f"{target} exists and is a regular file, not a socket" in line
        assert target.read_bytes() == PRECIOUS
    finally:
        ring.cleanup()
