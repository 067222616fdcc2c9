"""Helpers the tests share (fixtures live in the conftest.py of each directory): waiting,
concurrency, worker processes' environment, admin and portal clients, due delivery jobs."""

import asyncio
import os
import re
import threading
import time
from pathlib import Path

from django.conf import settings
from django.contrib.admin import helpers
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from backoffice.models import Job, JobStatus
from notifications.delivery import DELIVER_JOB
from notifications.jobs import deliver_notification
from payments.models import Membership
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parent.parent


PROCFILE_WORKER_CLASS = next(
    iter(re.findall(r"^worker:.*--worker-class[ =](\S+)", (ROOT / "Procfile").read_text(), flags=re.M)),
    "rq.worker.Worker",
)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A public address webhook tests resolve names to; never connected to (the network guard
# of tests/notifications would fail the test).
PUBLIC_ADDRESS = "93.184.215.14"


def worker_environment(**extra) -> dict:
    """The environment a worker subprocess needs to see this test's database and Redis."""
    env = dict(os.environ)
    db = connection.settings_dict
    if settings.USING_SQLITE:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env["REDIS_URL"] = settings.REDIS_URL
    # The gateway this test points at (the HTTP processor in end-to-end tests).
    for name in (
        "PAYMENTS_GATEWAY",
        "PAYMENTS_PROCESSOR_URL",
        "PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS",
        "PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS",
    ):
        env[name] = str(getattr(settings, name))
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_at_once(function, *args, copies: int = 2) -> list:
    """Call function(*args) from several threads released together, each on its own database
    connection (as separate processes would be); their return values, in finishing order."""
    start = threading.Barrier(copies)
    outcomes = []

    def call():
        try:
            start.wait()
            outcomes.append(function(*args))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == copies, "a concurrent call failed or hung"
    return outcomes


def run_coroutine(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API (the browser tests) leaves an
    event loop running in the test thread for the rest of the session, where asyncio.run refuses."""
    outcome = {}

    def run():
        try:
            outcome["result"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def database_session_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def end_database_session(pid: int) -> None:
    """End a PostgreSQL session from outside, as a database restart or failover would, and
    return once it is gone."""

    def terminate():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
                wait_until(lambda: not _session_exists(cursor, pid), timeout=10, message=f"session {pid} to end")
        finally:
            connection.close()

    outsider = threading.Thread(target=terminate)  # a thread has its own connection
    outsider.start()
    outsider.join(30)


def _session_exists(cursor, pid: int) -> bool:
    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
    return cursor.fetchone()[0] > 0


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def action_choices(response) -> set[str]:
    action_form = response.context["action_form"]
    if action_form is None:  # the changelist offers no action at all
        return set()
    return {name for name, _ in action_form.fields["action"].choices if name}


def run_action(
    client: Client, url: str, action: str, objects, *, reason: str | None = "checked with the team", **extra
):
    """Post an admin action the way a browser does: tick and choose (which shows the
    confirmation page), then, when a reason is given, confirm with it."""
    selected = [str(obj.pk) for obj in objects]
    first = client.post(url, {"action": action, "index": 0, helpers.ACTION_CHECKBOX_NAME: selected, **extra})
    if reason is None:
        return first
    return confirm_action(client, url, action, objects, reason=reason, **{**shown_hidden_fields(first), **extra})


def shown_hidden_fields(page) -> dict:
    """The hidden fields (a money-moving form's request key) of the form a page showed, as a
    browser posts them back."""
    context = getattr(page, "context", None)
    form = context.get("form") if context else None
    if form is None or not hasattr(form, "hidden_fields"):
        return {}
    return {field.name: field.value() for field in form.hidden_fields()}


def confirm_action(client: Client, url: str, action: str, objects, *, reason: str, **extra):
    """Post the confirmation page's form; on its own, this is what a forged request sends."""
    selected = [str(obj.pk) for obj in objects]
    return client.post(
        url,
        {"action": action, "post": "yes", "reason": reason, helpers.ACTION_CHECKBOX_NAME: selected, **extra},
        follow=True,
    )


def make_job(**overrides) -> Job:
    params = {
        "func": "payments.jobs.process_payment",
        "kwargs": {"payment_id": 1},
        "queue": "payments",
        "status": JobStatus.PENDING,
        "run_at": timezone.now(),
    }
    params.update(overrides)
    return Job.objects.create(**params)


def run_due_deliveries() -> list[dict]:
    """Run, in order, every delivery job whose time has come, the way the runner would (each
    once), by calling the job function directly. Returns what each returned."""
    results = []
    while True:
        job = (
            Job.objects.filter(func=DELIVER_JOB, status=JobStatus.PENDING, run_at__lte=timezone.now())
            .order_by("run_at", "created_at")
            .first()
        )
        if job is None:
            return results
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
        results.append(deliver_notification(**job.kwargs))


PASSWORD = "correct horse battery staple"


def merchant_user(username: str, merchant, role=Membership.Role.OWNER, **user_fields):
    user = UserFactory(username=username, **{"is_staff": False, **user_fields})
    Membership.objects.create(user=user, merchant=merchant, role=role)
    return user


def url(name: str, *args) -> str:
    return reverse(f"merchant:{name}", args=args)


def run_password_reset_jobs() -> None:
    """Run the queued password reset e-mails, as a worker would."""
    from backoffice.password_reset import SEND_JOB
    from backoffice.runner import run_job

    for job in Job.objects.filter(func=SEND_JOB, status__in=["pending", "queued"]):
        run_job(str(job.pk))
