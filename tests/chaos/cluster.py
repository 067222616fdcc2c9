"""A PostgreSQL cluster and a redis-server of the chaos run's own, in a temporary directory,
on free ports: the shared ones are never touched (they are stopped and restarted here)."""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from backoffice.embedded_redis import redis_server_command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"{name} not found: make chaos needs PostgreSQL's server binaries (initdb, pg_ctl)")
    return found


class Postgres:
    """initdb'd in a temporary directory; as the postgres user when run as root (initdb refuses root)."""

    def __init__(self, root: Path):
        self.dir = root / "pg"
        self.port = free_port()
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(root, user="postgres")
        subprocess.run(
            [*self.as_owner, _pg_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self.log = root / "pg.log"
        self.socket_dir = root
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/chaos"

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            [*self.as_owner, _pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-o", options, "-w", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def create_database(self) -> None:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE chaos")
        admin.close()


class Redis:
    """A redis-server without persistence: a restart loses every queue, as a failover may."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = redis_server_command(binary="redis-server", directory=self.root, port=self.port)
        self.process = subprocess.Popen([*command, "--logfile", str(self.root / "redis.log")])
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash would: nothing saved
            self.process.wait(10)


@contextlib.contextmanager
def own_services():
    root = Path(tempfile.mkdtemp(prefix="paydesk-chaos-"))
    postgres = redis = None
    try:
        postgres = Postgres(root)
        postgres.start()
        postgres.create_database()
        redis = Redis(root)
        redis.start()
        yield postgres, redis
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
