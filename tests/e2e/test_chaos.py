"""The short chaos run (`make chaos` runs them all): real workers and the sweeper under
`manage.py supervise`, with a PostgreSQL cluster and a redis-server of its own, through a worker
killed right after taking a job, a Redis restart that loses the queues, PostgreSQL down, and
bare processes that nothing restarts riding out a Redis and a PostgreSQL outage. Each scenario
ends with the audit (tests/chaos/run.py)."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.needs_redis_server


def test_the_short_chaos_run_recovers_from_every_fault_and_passes_every_audit():
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "JOBS_", "PAYMENTS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos.run", "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 of 4 scenario runs recovered and passed the audit" in result.stdout
