"""The fleet simulator's fault proxy in a process of its own (a core of its own to compete for,
not the devices' event loop): the tests' `FaultProxy` (tests/sync_support.py) in front of the
ingest workers, with the host's certificate so the devices' pin holds.

    python scripts/fleet_sim_proxy.py UPSTREAM_PORT CERT KEY SHA256 WEIGHTS_JSON SEED

prints the proxy's URL on a line of its own, serves until SIGTERM, then prints the faults it
applied (JSON, one line)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' fault proxy

from tests.sync_support import Cert, FaultProxy  # noqa: E402


def main() -> None:
    port, cert, key, sha256, weights, seed = sys.argv[1:7]
    proxy = FaultProxy(
        int(port), Cert(Path(cert), Path(key), sha256), json.loads(weights), seed=int(seed)
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    proxy.start()
    print(proxy.url, flush=True)
    done.wait()
    proxy.stop()
    print(json.dumps(dict(proxy.counts)), flush=True)


if __name__ == "__main__":
    main()
