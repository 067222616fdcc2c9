"""Start and stop a processor process from Python (the tests and the bench): a free port, a
store file of its own, the behaviour given as PROCESSOR_* variables."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProcessorClient:
    """Read what a processor holds (its operations, its reports), for tests and the bench."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def get_json(self, path: str, **query):
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own URL)
            return json.load(response)

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:  # noqa: S310 (our own URL)
            return response.read().decode()

    def operations(self, key_prefix: str) -> list[dict]:
        return self.get_json("/v1/operations", key_prefix=key_prefix)["operations"]


class ProcessorProcess(ProcessorClient):
    def __init__(self, *, log_path: Path | None = None, **behaviour):
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.db_path = Path(tempfile.mkdtemp(prefix="paydesk-processor-")) / "processor.sqlite3"
        self.behaviour = {key: str(value) for key, value in behaviour.items()}
        self.log_path = log_path or self.db_path.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    def start(self, **behaviour) -> "ProcessorProcess":
        """Start (or restart, on the same port and store) with this behaviour on top of the first."""
        self.behaviour.update({key: str(value) for key, value in behaviour.items()})
        env = {**os.environ, **self.behaviour, "PROCESSOR_PORT": str(self.port), "PROCESSOR_DB_PATH": str(self.db_path)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "processor"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not start; see {self.log_path}")
            time.sleep(0.05)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as response:  # noqa: S310 (our own URL)
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
