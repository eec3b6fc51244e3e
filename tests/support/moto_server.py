"""Run a moto server with the compilation-job extension as its own process (for ``airflow dags test``).

``python -m tests.support.moto_server`` prints the endpoint URL on its first line and serves
until it is terminated.
"""

from __future__ import annotations

import signal
import sys
import threading

from moto.server import ThreadedMotoServer

from tests.support import moto_neo


def main() -> int:
    moto_neo.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
