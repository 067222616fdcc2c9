"""The Paydesk processes of a chaos run: workers and the sweeper, as the Procfile runs them
(under `manage.py supervise`) or bare (the case where nothing restarts them)."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ["rqworker", "payments", "notifications", "default", "--worker-class"]


class Process:
    def __init__(self, name: str, command: list[str], env: dict, log_dir: Path, supervised: bool):
        self.name = name
        self.supervised = supervised
        self.log = (log_dir / f"{name}.log").open("ab")
        prefix = ["supervise"] if supervised else []
        self.popen = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *prefix, *command],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def payload_pid(self) -> int | None:
        """The process doing the work: the supervised child, or the process itself."""
        if not self.supervised:
            return self.popen.pid if self.alive() else None
        try:
            children = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def kill_payload(self) -> bool:
        pid = self.payload_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        self.log.close()


class Fleet:
    def __init__(self, env: dict, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []

    def start_worker(self, *, supervised: bool = True, worker_class: str = "backoffice.worker.Worker") -> Process:
        name = f"worker-{len(self.processes)}"
        process = Process(name, [*WORKER, worker_class], self.env, self.log_dir, supervised)
        self.processes.append(process)
        return process

    def start_sweeper(self, *, supervised: bool = True) -> Process:
        process = Process(f"sweeper-{len(self.processes)}", ["run_sweeper"], self.env, self.log_dir, supervised)
        self.processes.append(process)
        return process

    def workers(self) -> list[Process]:
        return [process for process in self.processes if process.name.startswith("worker")]

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes = []
