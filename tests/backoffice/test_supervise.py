"""`manage.py supervise` starts a command again whenever it exits, and stops with it on SIGTERM."""

import os
import signal
import subprocess
import sys

from tests.helpers import ROOT, wait_until


def test_a_command_that_exits_is_started_again_until_the_supervisor_is_told_to_stop(tmp_path):
    log = (tmp_path / "supervise.log").open("wb")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    supervisor = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "supervise", "--longest-wait", "0.5", "check", "--fail-level", "X"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def restarts() -> int:
            return (tmp_path / "supervise.log").read_text().count("starting it again")

        wait_until(lambda: restarts() >= 2, timeout=120, interval=0.2, message="two restarts")
        text = (tmp_path / "supervise.log").read_text()
        assert "supervise: `check --fail-level X` exited with code 2; starting it again in" in text
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(60)
        log.close()
    assert code == 0
