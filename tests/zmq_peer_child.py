"""A peer in its own process, for tests/test_zmq.py (run as a script, not collected).

argv: peer n length seed out.npy bind-endpoint. Prints its bound address, reads one JSON
line {peer: address} from stdin, runs a ring all-reduce of its seeded buffer, saves it.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ringfl.collective.allreduce import RingAllReduce
from ringfl.transport.zmq import ZmqPeer


def main() -> None:
    peer, n, length, seed = (int(a) for a in sys.argv[1:5])
    out, bind = sys.argv[5], sys.argv[6]
    data = np.random.default_rng(seed + peer).standard_normal(length).astype(np.float32)
    with ZmqPeer(peer, {peer: bind}, session=77) as zp:
        print(zp.address, flush=True)
        zp.set_endpoints({int(k): v for k, v in json.loads(sys.stdin.readline()).items()})
        machine = RingAllReduce(peer, list(range(n)), data, session=77, segment_bytes=1 << 16)
        np.save(out, zp.run(machine, timeout_s=60))


if __name__ == "__main__":
    main()
