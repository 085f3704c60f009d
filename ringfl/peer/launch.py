"""`ringfl launch`: start every node of a topology whose address is on this machine, each
as its own process, and stream their console output.

The launcher imports torch and ringfl once and then forks one child per node (POSIX), so
eight peers start in about the time one import takes instead of eight; each child is a
separate process with its own sockets, and can be killed on its own. Children get their
own process group (a terminal's Ctrl-C reaches only the launcher), and the launcher
forwards the stop: SIGTERM to every child, SIGKILL to those still alive after a grace
period. Exit status: 0 when every peer finished, else the highest child status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Hashable, Sequence
from urllib.parse import urlsplit

from ringfl.data.parties import PartyData
from ringfl.errors import ConfigError
from ringfl.peer.node import PeerNode, PeerOptions, PeerStopped


def is_local_address(address: str) -> bool:
    """Whether a peer address is on this machine: any ipc:// path, or a tcp:// host that
    resolves to an address this machine can bind (loopback, or one of its interfaces)."""
    if address.startswith("ipc://"):
        return True
    if not address.startswith("tcp://"):
        return False
    host = urlsplit(address).hostname or ""
    if host in ("*", "0.0.0.0", "::"):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = sockaddr[0]
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(ip).is_loopback:
                return True
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((ip, 0))
            return True
        except OSError:
            continue
    return False


def local_nodes(graph, only: Sequence[str] | None = None) -> list[Hashable]:
    """The nodes whose address is on this machine (or the named ones)."""
    from ringfl.topology import ADDRESS, peers

    nodes = peers(graph)
    if only:
        names = {str(n): n for n in nodes}
        missing = [x for x in only if x not in names]
        if missing:
            raise ConfigError(f"--nodes: {', '.join(missing)} not in the topology")
        return [names[x] for x in only]
    return [n for n in nodes if is_local_address(str(graph.nodes[n].get(ADDRESS, "")))]


def _child(opts: PeerOptions, write_fd: int) -> int:
    from ringfl.commands.peer import process_settings

    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    opts = dataclasses.replace(opts, console=sys.stderr)
    process_settings()
    try:
        return PeerNode(opts).run()
    except PeerStopped as exc:
        print(f"ringfl peer {opts.node}: stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"ringfl peer {opts.node}: stopped by the launcher", file=sys.stderr)
        return 130
    except Exception as exc:  # a RingflError or a bug: one line, then exit
        print(f"ringfl peer {opts.node}: error: {exc}", file=sys.stderr)
        return 1


def launch(
    base: PeerOptions,
    nodes: Sequence[Hashable],
    *,
    faults: dict[str, tuple[str, ...]] | None = None,
    grace_s: float = 5.0,
    parties: dict[str, PartyData] | None = None,
) -> int:
    """Fork one peer per node (options `base` with `node`, `out` and `faults` set per
    node), stream their output to stdout until all exit, and return the highest exit
    status. A node that the config's fault schedule crashes and restarts is started again
    (a new process, same directory) when its crash has killed it. `parties`: each node's
    own data, loaded already (built-in datasets, the Python API); else every child loads
    its own."""
    import torch  # noqa: F401  (imported once, before forking)

    import ringfl.engine.build  # noqa: F401
    from ringfl import topology
    from ringfl.config import load_config

    with contextlib.suppress(ImportError):
        import sklearn.datasets  # noqa: F401

    from ringfl.config import Config

    config = base.config if isinstance(base.config, Config) else load_config(base.config)
    graph = topology.load(base.topology)
    names = [str(v) for v in topology.peers(graph)]
    if parties is None and config.data.dataset != "files" and base.party is None:
        # a built-in dataset split among simulated parties: split once, give each its part
        from ringfl.data.parties import PartyData, builtin_split

        parts, test, _ = builtin_split(config, len(names))
        parties = {
            name: PartyData(parts[i], None, test, test.num_classes) for i, name in enumerate(names)
        }
    from ringfl.engine.faults import resolve

    plan = resolve(
        config.faults, names, source=str(base.config) if isinstance(base.config, str) else "config"
    )
    restart = {names[p] for p in plan.restarts}
    children: dict[int, tuple[str, int]] = {}
    sel = selectors.DefaultSelector()
    t0 = time.time()

    def fork(node: Hashable) -> int:
        r, w = os.pipe()
        opts = dataclasses.replace(
            base,
            node=str(node),
            out=_out_dir(base, node),
            faults=(faults or {}).get(str(node), ()),
            party=(parties or {}).get(str(node), base.party),
        )
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            os.setpgid(0, 0)
            code = 1
            try:
                code = _child(opts, w)
            finally:
                os._exit(code)
        os.close(w)
        children[pid] = (str(node), r)
        sel.register(r, selectors.EVENT_READ, (str(node), bytearray()))
        return pid

    by_name = {str(n): n for n in nodes}
    for node in nodes:
        fork(node)
    print(
        f"ringfl launch: started {len(children)} peer(s) in {time.time() - t0:.2f} s: "
        + ", ".join(f"{n} (pid {p})" for p, (n, _) in children.items()),
        flush=True,
    )
    status: dict[int, int] = {}
    stopping_since: float | None = None

    def on_sigint(signum, frame):  # noqa: ARG001
        nonlocal stopping_since
        if stopping_since is None:
            stopping_since = time.monotonic()
            print("ringfl launch: stopping all peers (Ctrl-C)", flush=True)
            for pid in children:
                if pid not in status:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)

    old_int = signal.signal(signal.SIGINT, on_sigint)
    old_term = signal.signal(signal.SIGTERM, on_sigint)
    try:
        while len(status) < len(children) or sel.get_map():
            for key, _ in sel.select(timeout=0.2):
                name, buf = key.data
                try:
                    chunk = os.read(key.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    if buf:
                        _emit(bytes(buf))
                    continue
                buf += chunk
                *lines, rest = bytes(buf).split(b"\n")
                buf[:] = rest
                for line in lines:
                    _emit(line)
            for pid in list(children):
                if pid in status:
                    continue
                done, code = os.waitpid(pid, os.WNOHANG)
                if done:
                    status[pid] = _exit_code(code)
                    name = children[pid][0]
                    print(f"ringfl launch: {name} exited with status {status[pid]}", flush=True)
                    if status[pid] == 137 and name in restart and stopping_since is None:
                        restart.discard(name)  # the schedule's restart: once
                        fork(by_name[name])
                        print(f"ringfl launch: restarted {name} (fault schedule)", flush=True)
            if stopping_since is not None and time.monotonic() - stopping_since > grace_s:
                for pid in children:
                    if pid not in status:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    bad = {children[p][0]: c for p, c in status.items() if c}
    print(
        f"ringfl launch: {len(children) - len(bad)} of {len(children)} peer(s) finished"
        + (f"; failed: {', '.join(f'{n} ({c})' for n, c in bad.items())}" if bad else ""),
        flush=True,
    )
    return max(status.values(), default=0) if stopping_since is None else 130


def _emit(line: bytes) -> None:
    sys.stdout.write(line.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()


def _exit_code(code: int) -> int:
    if os.WIFEXITED(code):
        return os.WEXITSTATUS(code)
    if os.WIFSIGNALED(code):
        return 128 + os.WTERMSIG(code)
    return 1


def _out_dir(base: PeerOptions, node: Hashable) -> str | None:
    from ringfl.peer.identity import node_dir_name

    if base.out is None:
        return None
    return os.path.join(base.out, node_dir_name(node))


__all__ = ["is_local_address", "launch", "local_nodes"]
