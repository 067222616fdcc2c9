"""Bulk actions as background jobs (backoffice.bulk) and the progress they report
(backoffice.progress)."""

import pytest
from django.urls import reverse
from django.utils import timezone

from backoffice.bulk import BULK_JOB, bulk_action_enqueue
from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.progress import job_progress, running_job
from backoffice.runner import run_job
from payments.models import Payment, PaymentEvent
from payments.states import PaymentStatus
from tests.factories import PaymentFactory
from tests.helpers import confirm_action, make_job, messages_of

pytestmark = pytest.mark.django_db

PAYMENTS_URL = "/admin/payments/payment/"
JOBS_URL = "/admin/backoffice/job/"


def statuses(payments) -> list[str]:
    by_pk = dict(Payment.objects.filter(pk__in=[p.pk for p in payments]).values_list("pk", "status"))
    return [by_pk[p.pk] for p in payments]


def processing_jobs(payment):
    return Job.objects.filter(object_id=str(payment.pk), func="payments.jobs.process_payment")


def counting_body(items: int, fail_after: int | None = None) -> dict:
    """A job body reporting progress in chunks of 3; it raises once after `fail_after` objects."""
    progress = job_progress(total=items)
    for start in range(progress.done, items, 3):
        chunk = range(start, min(start + 3, items))
        if fail_after is not None and start >= fail_after and not Job.objects.filter(attempts__gte=2).exists():
            raise RuntimeError("worker lost")
        progress.record(
            done=[f"item {n}" for n in chunk if n % 2 == 0],
            skipped=[(f"item {n}", "odd") for n in chunk if n % 2],
        )
    return progress.summary()


def test_a_job_reports_progress_in_chunks_and_a_retry_resumes_after_the_last_one():
    job = make_job(func="tests.backoffice.test_bulk.counting_body", kwargs={"items": 10, "fail_after": 6})

    assert run_job(str(job.pk)) == {"status": "retrying"}
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total) == (6, 10)
    assert job.progress_outcomes["done"] == 3 and job.progress_outcomes["skipped"] == {"odd": 3}

    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
    assert run_job(str(job.pk)) == {"status": "succeeded"}
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total) == (10, 10)
    # Each object counted once across both attempts.
    assert job.result == {"total": 10, "done": 5, "skipped": {"odd": 5}}
    assert sorted(item["object"] for item in job.progress_outcomes["objects"]) == [f"item {n}" for n in range(10)]
    assert {"object": "item 1", "outcome": "skipped", "reason": "odd"} in job.progress_outcomes["objects"]


def test_progress_outside_a_job_counts_in_memory_only():
    progress = job_progress(total=2)
    progress.record(done=["a"], skipped=[("b", "why")])
    assert progress.summary() == {"total": 2, "done": 1, "skipped": {"why": 1}}
    assert not Job.objects.exists()


def test_listed_objects_are_capped_but_counts_cover_all(settings):
    settings.JOBS_PROGRESS_LISTED_DONE = 2
    settings.JOBS_PROGRESS_LISTED_SKIPPED = 1
    job = make_job(func="x.y")
    with running_job(job.pk):
        progress = job_progress(total=6)
        progress.record(done=["a", "b", "c"], skipped=[("d", "r1"), ("e", "r2"), ("f", "r2")])
    job.refresh_from_db()
    assert job.progress_outcomes["done"] == 3
    assert job.progress_outcomes["skipped"] == {"r1": 1, "r2": 2}
    assert [item["object"] for item in job.progress_outcomes["objects"]] == ["a", "b", "d"]


def test_a_large_retry_runs_as_one_job_and_the_request_answers_with_its_page(admin_client, admin_user, settings):
    settings.ADMIN_BULK_JOB_THRESHOLD = 3
    settings.BULK_ACTION_CHUNK_SIZE = 2
    failed = [PaymentFactory(status=PaymentStatus.FAILED) for _ in range(4)]
    pending = PaymentFactory(status=PaymentStatus.PENDING)
    selection = [*failed, pending]

    answer = confirm_action(admin_client, PAYMENTS_URL, "retry_failed", selection, reason="card updated")

    [job] = Job.objects.filter(func=BULK_JOB)
    assert answer.redirect_chain[-1][0] == reverse("admin:backoffice_job_change", args=[job.pk])
    job_url = reverse("admin:backoffice_job_change", args=[job.pk])
    assert messages_of(answer) == [f'Retry 5 payments in the background: <a href="{job_url}">follow its progress</a>.']
    assert job.requested_by == admin_user
    # Nothing changed in the request: the job does the work.
    assert statuses(selection) == ["failed"] * 4 + ["pending"]

    assert run_job(str(job.pk)) == {"status": "succeeded"}

    assert statuses(selection) == ["pending"] * 5
    job.refresh_from_db()
    assert job.result == {"total": 5, "done": 4, "skipped": {"not failed (it is pending)": 1}}
    assert (job.progress_done, job.progress_total) == (5, 5)
    for payment in failed:
        processing = processing_jobs(payment).get()
        # Written by one INSERT ... unnest (backoffice.db.insert_rows): the model's defaults hold.
        assert processing.requested_by == admin_user and processing.concerns == payment
        assert (processing.kwargs, processing.queue, processing.attempts, processing.max_attempts) == (
            {"payment_id": payment.pk},
            "payments",
            0,
            settings.JOBS_DEFAULT_MAX_ATTEMPTS,
        )
        assert processing.status == JobStatus.PENDING and processing.created_at is not None  # pushed on commit
        event = PaymentEvent.objects.filter(payment=payment).latest("id")
        assert (event.from_status, event.to_status, event.actor, event.reason) == (
            "failed",
            "pending",
            admin_user,
            "card updated",
        )
    assert not processing_jobs(pending).exists()
    assert AuditEntry.objects.filter(action="payment_retry", actor=admin_user, reason="card updated").count() == 4

    page = admin_client.get(reverse("admin:backoffice_job_change", args=[job.pk])).content.decode()
    assert '<progress class="job-progress" value="5" max="5">' in page
    assert "5 / 5" in page
    assert pending.public_id in page and "not failed (it is pending)" in page
    assert "backoffice/jobs.css" in page
    assert "<script>" not in page and "style=" not in page.split("<body")[1].split('id="footer"')[0]

    # A second run of the same job (delivered twice) changes nothing more.
    Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
    run_job(str(job.pk))
    assert Job.objects.filter(func="payments.jobs.process_payment").count() == 4


def test_a_small_selection_still_runs_in_the_request(admin_client, settings):
    settings.ADMIN_BULK_JOB_THRESHOLD = 3
    failed = [PaymentFactory(status=PaymentStatus.FAILED) for _ in range(3)]

    done = confirm_action(admin_client, PAYMENTS_URL, "retry_failed", failed, reason="card updated")

    assert messages_of(done) == ["3 queued"]
    assert not Job.objects.filter(func=BULK_JOB).exists()


def test_bulk_cancel_and_process_now_check_each_payment(admin_user, make_payment):
    pending = [make_payment() for _ in range(2)]
    queued_one = pending[0]
    unqueued = PaymentFactory(status=PaymentStatus.PENDING)
    succeeded = PaymentFactory(status=PaymentStatus.SUCCEEDED)
    ids = [p.pk for p in [*pending, unqueued, succeeded]] + [999_999_999]

    job = bulk_action_enqueue(
        handler="payments.bulk.payments_process_now_many", ids=ids, reason="stuck", requested_by=admin_user, verb="x"
    )
    run_job(str(job.pk))
    job.refresh_from_db()
    assert job.result["done"] == 1
    assert job.result["skipped"] == {
        "already queued": 2,
        "not pending (it is succeeded)": 1,
        "no longer exists": 1,
    }
    assert processing_jobs(unqueued).count() == 1 and processing_jobs(queued_one).count() == 1

    job = bulk_action_enqueue(
        handler="payments.bulk.payments_cancel_many", ids=ids, reason="asked", requested_by=admin_user, verb="x"
    )
    run_job(str(job.pk))
    job.refresh_from_db()
    assert job.result["done"] == 3
    assert statuses([*pending, unqueued, succeeded]) == ["canceled"] * 3 + ["succeeded"]
    assert PaymentEvent.objects.filter(to_status="canceled", reason="asked").count() == 3


def test_jobs_list_bulk_requeue_and_cancel(admin_client, settings):
    settings.ADMIN_BULK_JOB_THRESHOLD = 1
    failed = [make_job(status=JobStatus.FAILED, attempts=5, finished_at=timezone.now()) for _ in range(2)]
    running = make_job(status=JobStatus.RUNNING)

    confirm_action(admin_client, JOBS_URL, "requeue", [*failed, running], reason="gateway back")
    [bulk] = Job.objects.filter(func=BULK_JOB)
    run_job(str(bulk.pk))
    bulk.refresh_from_db()
    assert bulk.result == {"total": 3, "done": 2, "skipped": {"not failed or canceled (it is running)": 1}}
    assert {Job.objects.get(pk=j.pk).status for j in failed} <= {JobStatus.PENDING, JobStatus.QUEUED}
    assert AuditEntry.objects.filter(action="job_requeue", reason="gateway back").count() == 2

    confirm_action(admin_client, JOBS_URL, "cancel", [*failed, running], reason="not now")
    bulk = Job.objects.filter(func=BULK_JOB).exclude(pk=bulk.pk).get()
    run_job(str(bulk.pk))
    bulk.refresh_from_db()
    assert bulk.result["done"] == 2
    assert {Job.objects.get(pk=j.pk).status for j in failed} == {JobStatus.CANCELED}


def test_many_jobs_are_pushed_in_one_pipeline_on_commit_and_marked_queued(django_capture_on_commit_callbacks):
    from backoffice.services import job_enqueue_many, rq_queue

    payments = [PaymentFactory(status=PaymentStatus.PENDING) for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job_ids = job_enqueue_many(
            func="payments.jobs.process_payment",
            kwargs_list=[{"payment_id": payment.pk} for payment in payments],
            queue="payments",
            concerns=payments,
        )
    assert not set(rq_queue("payments").get_job_ids()) & {str(pk) for pk in job_ids}  # nothing before commit

    for callback in callbacks:
        callback()

    assert {str(pk) for pk in job_ids} <= set(rq_queue("payments").get_job_ids())
    assert set(Job.objects.filter(pk__in=job_ids).values_list("status", flat=True)) == {JobStatus.QUEUED}
