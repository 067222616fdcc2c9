"""Settings come from the environment; production settings pass `check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "JOBS_", "PAYMENTS_"))}
    base["DJANGO_SETTINGS_MODULE"] = "backoffice.settings"
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=180
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY="a-production-secret-key-that-is-long-and-random-7f3k2j9x8c7v6b5n4m",
        DJANGO_ALLOWED_HOSTS="paydesk.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_a_secret_key_is_required_when_debug_is_off():
    result = manage("migrate", "--plan", DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off" in result.stderr


def test_migrations_can_be_checked_without_a_secret_key():
    result = manage("makemigrations", "--check", "--dry-run", DJANGO_DEBUG="false")
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("JOBS_HEARTBEAT_SECONDS", "often", "JOBS_HEARTBEAT_SECONDS='often' is not valid"),
        ("JOBS_DEFAULT_MAX_ATTEMPTS", "0", "JOBS_DEFAULT_MAX_ATTEMPTS must be greater than zero"),
        ("JOBS_STALE_AFTER_SECONDS", "5", "must be longer than JOBS_HEARTBEAT_SECONDS (10.0)"),
        ("DJANGO_DEBUG", "perhaps", "DJANGO_DEBUG='perhaps' is not valid"),
        ("PAYMENTS_REFUND_APPROVAL_THRESHOLD", "eur=500", "'eur' is not an ISO 4217 code"),
        ("PAYMENTS_REFUND_APPROVAL_THRESHOLD", "EUR=5.001", "EUR='5.001' is not an amount in major units"),
        ("PAYMENTS_REFUND_APPROVAL_THRESHOLD", "EUR=lots", "EUR='lots' is not an amount"),
        ("PAYMENTS_RECOVERY_SCHEDULE_SECONDS", "", "needs at least one delay"),
        ("REDIS_PUSH_TIMEOUT_SECONDS", "0", "REDIS_PUSH_TIMEOUT_SECONDS must be greater than zero"),
    ],
)
def test_bad_setting_values_fail_clearly(variable, value, message):
    result = manage("check", **{"DJANGO_DEBUG": "true", variable: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_settings_that_must_hold_together_are_checked_together_with_every_broken_rule_named():
    result = manage("check", DJANGO_DEBUG="true", JOBS_STALE_AFTER_SECONDS="20", WEBHOOKS_TRY_IN_FLIGHT_SECONDS="15")

    assert result.returncode != 0
    assert "Settings that must hold together do not:" in result.stderr
    assert "JOBS_STALE_AFTER_SECONDS (20.0) must be at least WEBHOOKS_TRY_IN_FLIGHT_SECONDS (15.0)" not in result.stderr
    assert "WEBHOOKS_TRY_IN_FLIGHT_SECONDS (15.0) must be longer than twice WEBHOOKS_TIMEOUT_SECONDS (10.0" in (
        result.stderr
    )
    result = manage("check", DJANGO_DEBUG="true", JOBS_STALE_AFTER_SECONDS="20")
    assert "JOBS_STALE_AFTER_SECONDS (20.0) must be at least WEBHOOKS_TRY_IN_FLIGHT_SECONDS (35.0)" in result.stderr
    assert manage("check", DJANGO_DEBUG="true", JOBS_STALE_AFTER_SECONDS="35").returncode == 0


def test_a_fresh_clone_with_no_database_configured_migrates_its_sqlite_file(tmp_path):
    """`make run` with no DATABASE_URL uses SQLite: every migration must apply there, without a
    warning in the terminal (PostgreSQL-only steps check the vendor)."""
    result = manage("migrate", "--no-input", DJANGO_DEBUG="true", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WARNINGS" not in result.stderr + result.stdout
    assert (tmp_path / "db.sqlite3").stat().st_size > 0
