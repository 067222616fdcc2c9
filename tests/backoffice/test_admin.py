from datetime import timedelta

import django_rq
import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_rq.settings import get_queues_map

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.services import job_requeue
from tests.factories import UserFactory
from tests.helpers import action_choices, confirm_action, logged_in, make_job, messages_of, run_action

pytestmark = pytest.mark.django_db

# --- helpers shared with tests/payments/test_admin.py -------------------------------------


# --- local helpers -------------------------------------------------------------------------

JOBS_URL = "/admin/backoffice/job/"


def statuses(*jobs) -> list[str]:
    return [Job.objects.get(pk=job.pk).status for job in jobs]


# --- the job list ----------------------------------------------------------------------------


def test_job_changelist_of_50_jobs_renders_in_bounded_queries(
    admin_client, make_payment, django_assert_max_num_queries
):
    payments = [make_payment() for _ in range(50)]
    assert Job.objects.count() == 50

    with django_assert_max_num_queries(10):
        response = admin_client.get(JOBS_URL)

    assert response.status_code == 200
    page = response.content.decode()
    assert "process_payment" in page
    payment_url = reverse("admin:payments_payment_change", args=[payments[0].pk])
    assert f'href="{payment_url}">{payments[0].public_id}</a>' in page
    assert "0/5" in page  # attempts / max


def test_job_changelist_filters_by_status_queue_function_and_age(admin_client):
    old_failed = make_job(status=JobStatus.FAILED)
    Job.objects.filter(pk=old_failed.pk).update(created_at=timezone.now() - timedelta(days=3))
    recent = make_job(func="notifications.jobs.deliver", queue="notifications")

    def listed(query: str) -> set:
        response = admin_client.get(JOBS_URL + query)
        assert response.status_code == 200
        return {job.pk for job in response.context["cl"].result_list}

    assert listed("?status__exact=failed") == {old_failed.pk}
    assert listed("?queue__exact=notifications") == {recent.pk}
    assert listed("?func=payments.jobs.process_payment") == {old_failed.pk}
    assert listed("?age=hour") == {recent.pk}
    assert listed("?age=today") == {recent.pk}
    assert listed("?age=older") == {old_failed.pk}
    assert listed("?age=yesterday-ish") == {old_failed.pk, recent.pk}  # unknown value: no filter


def test_job_search_by_id_function_and_object_id_never_fails(admin_client):
    job = make_job(object_id="4242")
    other = make_job(func="backoffice.sweeper.sweep", object_id="7")

    def found(term: str) -> set:
        response = admin_client.get(JOBS_URL, {"q": term})
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert found(str(job.pk)) == {job.pk}
    assert found(str(job.pk)[:8]) == {job.pk}
    assert found("sweep") == {other.pk}
    assert found("4242") == {job.pk}
    assert found("'; drop table --") == set()


def test_job_change_page_is_read_only_and_shows_the_traceback(admin_client):
    job = make_job(
        status=JobStatus.FAILED,
        attempts=5,
        max_attempts=5,
        last_error="RuntimeError: gateway <down>",
        traceback='Traceback (most recent call last):\n  File "x.py"\n<script>alert(1)</script>',
        result={"skipped": "nothing to process"},
        started_at=timezone.now() - timedelta(seconds=2),
        finished_at=timezone.now(),
    )
    url = reverse("admin:backoffice_job_change", args=[job.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    page = response.content.decode()
    assert "<pre>Traceback (most recent call last):" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</pre>" in page
    assert "<script>alert(1)" not in page
    assert "RuntimeError: gateway &lt;down&gt;" in page
    assert "nothing to process" in page
    assert 'name="_save"' not in page
    assert admin_client.post(url, {"status": "succeeded"}).status_code == 403
    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILED
    assert admin_client.get(reverse("admin:backoffice_job_add")).status_code == 403
    assert admin_client.post(reverse("admin:backoffice_job_delete", args=[job.pk]), {"post": "yes"}).status_code == 403
    assert Job.objects.filter(pk=job.pk).exists()


def test_job_change_page_links_to_the_job_in_django_rq(admin_client, make_payment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        make_payment()
    job = Job.objects.get()
    assert job.status == JobStatus.QUEUED  # pushed to Redis on commit

    page = admin_client.get(reverse("admin:backoffice_job_change", args=[job.pk])).content.decode()

    # django-rq numbers queues by their sorted names, not by the order of RQ_QUEUES.
    rq_url = reverse("admin:django_rq_job_detail", args=[get_queues_map()["payments"], str(job.pk)])
    assert f'href="{rq_url}"' in page
    rq_page = admin_client.get(rq_url)
    assert rq_page.status_code == 200
    assert str(job.pk) in rq_page.content.decode()


# --- requeue and cancel -------------------------------------------------------------------------


def test_requeue_asks_for_a_reason_then_requeues_failed_and_canceled_and_skips_the_rest(admin_client, admin_user):
    failed = make_job(status=JobStatus.FAILED, attempts=5, max_attempts=5)
    canceled = make_job(status=JobStatus.CANCELED)
    succeeded = make_job(status=JobStatus.SUCCEEDED)
    jobs = [failed, canceled, succeeded]

    confirmation = run_action(admin_client, JOBS_URL, "requeue", jobs, reason=None)

    assert confirmation.status_code == 200
    assert "admin/action_with_reason.html" in [template.name for template in confirmation.templates]
    assert 'name="reason"' in confirmation.content.decode()
    assert statuses(*jobs) == ["failed", "canceled", "succeeded"]

    without_reason = run_action(admin_client, JOBS_URL, "requeue", jobs, reason="   ")

    assert "This field is required." in without_reason.content.decode()
    assert statuses(*jobs) == ["failed", "canceled", "succeeded"]
    assert not AuditEntry.objects.exists()

    done = run_action(admin_client, JOBS_URL, "requeue", jobs, reason="gateway is back")

    assert messages_of(done) == ["2 requeued, 1 skipped: not failed or canceled (it is succeeded)"]
    assert statuses(*jobs) == ["pending", "pending", "succeeded"]
    assert Job.objects.get(pk=failed.pk).max_attempts > 5
    entries = AuditEntry.objects.filter(action="job_requeue")
    assert {entry.object_id for entry in entries} == {str(failed.pk), str(canceled.pk)}
    assert {(entry.actor, entry.reason) for entry in entries} == {(admin_user, "gateway is back")}


def test_operator_cancels_jobs_that_have_not_run_and_skips_the_others(operator_client, operator):
    waiting = [make_job(status=status) for status in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)]
    running = make_job(status=JobStatus.RUNNING)
    succeeded = make_job(status=JobStatus.SUCCEEDED)

    done = run_action(operator_client, JOBS_URL, "cancel", [*waiting, running, succeeded], reason="duplicate")

    [message] = messages_of(done)
    assert message.startswith("3 canceled, 2 skipped: ")
    assert "1 already running" in message and "1 already succeeded" in message
    assert statuses(*waiting, running, succeeded) == ["canceled"] * 3 + ["running", "succeeded"]
    assert AuditEntry.objects.filter(action="job_cancel", actor=operator, reason="duplicate").count() == 3


def test_viewer_sees_jobs_without_actions_and_a_forged_action_changes_nothing(viewer_client):
    failed = make_job(status=JobStatus.FAILED)
    pending = make_job(status=JobStatus.PENDING)

    response = viewer_client.get(JOBS_URL)

    assert response.status_code == 200
    assert action_choices(response) == set()
    for action, job in (("requeue", failed), ("cancel", pending)):
        forged = confirm_action(viewer_client, JOBS_URL, action, [job], reason="let me in")
        assert forged.status_code == 200  # the changelist again: it has no action to run
        assert messages_of(forged) == []
    assert statuses(failed, pending) == ["failed", "pending"]
    assert not AuditEntry.objects.exists()


def test_each_job_action_needs_its_own_permission():
    requeuer = UserFactory(username="rita-requeuer")
    requeuer.user_permissions.add(
        Permission.objects.get(codename="view_job"), Permission.objects.get(codename="requeue_job")
    )
    client = logged_in(requeuer)
    pending = make_job(status=JobStatus.PENDING)

    assert action_choices(client.get(JOBS_URL)) == {"requeue"}
    forged = confirm_action(client, JOBS_URL, "cancel", [pending], reason="no permission")
    assert messages_of(forged) == ["No action selected."]
    assert statuses(pending) == ["pending"]


def test_operator_sees_both_job_actions(operator_client):
    assert action_choices(operator_client.get(JOBS_URL)) == {"requeue", "cancel"}


# --- audit trail -------------------------------------------------------------------------------


def test_audit_entries_are_listed_filtered_and_never_editable(admin_client, operator):
    job = make_job(status=JobStatus.FAILED)
    job_requeue(job=job, actor=operator, reason="gateway is back")
    entry = AuditEntry.objects.get()
    url = "/admin/backoffice/auditentry/"

    for query in (
        "",
        "?action=job_requeue",
        f"?actor__id__exact={operator.pk}",
        f"?created_at__year={entry.created_at.year}",
        "?q=gateway",
    ):
        response = admin_client.get(url + query)
        assert response.status_code == 200
        assert [row.pk for row in response.context["cl"].result_list] == [entry.pk]
    assert action_choices(admin_client.get(url)) == set()

    change_url = reverse("admin:backoffice_auditentry_change", args=[entry.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert "gateway is back" in page.content.decode()
    assert reverse("admin:backoffice_job_change", args=[job.pk]) in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert admin_client.post(change_url, {"reason": "edited"}).status_code == 403
    assert admin_client.get(reverse("admin:backoffice_auditentry_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:backoffice_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert AuditEntry.objects.get().reason == "gateway is back"


# --- django-rq's dashboard ------------------------------------------------------------------


def test_superuser_finds_the_django_rq_dashboard_on_the_admin_index(admin_client):
    dashboard_url = reverse("admin:django_rq_dashboard_changelist")

    assert dashboard_url in admin_client.get(reverse("admin:index")).content.decode()
    assert admin_client.get(dashboard_url).status_code == 200
    assert admin_client.get(reverse("admin:django_rq_home")).status_code == 200


def test_operator_may_use_the_django_rq_dashboard(operator_client):
    dashboard_url = reverse("admin:django_rq_dashboard_changelist")

    assert dashboard_url in operator_client.get(reverse("admin:index")).content.decode()
    assert operator_client.get(dashboard_url).status_code == 200
    assert operator_client.get(reverse("admin:django_rq_jobs", args=[0])).status_code == 200


def test_viewer_is_kept_out_of_the_django_rq_dashboard(viewer_client):
    queue = django_rq.get_queue("default")
    queue.enqueue("os.getcwd")
    queue_index = get_queues_map()["default"]

    assert (
        reverse("admin:django_rq_dashboard_changelist")
        not in viewer_client.get(reverse("admin:index")).content.decode()
    )
    assert viewer_client.get(reverse("admin:django_rq_dashboard_changelist")).status_code == 403
    assert viewer_client.get(reverse("admin:django_rq_home")).status_code == 403
    assert viewer_client.get(reverse("admin:django_rq_jobs", args=[queue_index])).status_code == 403
    assert viewer_client.post(reverse("admin:django_rq_clear", args=[queue_index]), {"post": "yes"}).status_code == 403
    assert queue.count == 1


def test_emptying_a_queue_in_the_django_rq_dashboard_is_audited(operator, operator_client):
    queue = django_rq.get_queue("default")
    queue.enqueue("os.getcwd")
    queue_index = get_queues_map()["default"]

    operator_client.post(reverse("admin:django_rq_clear", args=[queue_index]), {"post": "yes"})

    assert queue.count == 0
    entry = AuditEntry.objects.get(action__startswith="rq_dashboard_")
    assert entry.actor == operator and entry.details["path"].endswith(f"queues/{queue_index}/empty/")


def test_anonymous_visitor_of_the_django_rq_dashboard_is_sent_to_the_login_page(client):
    response = client.get(reverse("admin:django_rq_home"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_a_confirmation_posted_without_its_csrf_token_is_refused(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    failed = make_job(status=JobStatus.FAILED)

    response = client.post(
        JOBS_URL,
        {"action": "requeue", "post": "yes", "reason": "no token", helpers.ACTION_CHECKBOX_NAME: [str(failed.pk)]},
    )

    assert response.status_code == 403
    assert statuses(failed) == ["failed"]
    assert not AuditEntry.objects.exists()


def test_a_bulk_delete_in_the_django_rq_dashboard_names_the_jobs_in_the_audit_trail(operator, operator_client):
    queue = django_rq.get_queue("default")
    jobs = [queue.enqueue("os.getcwd") for _ in range(2)]
    queue_index = get_queues_map()["default"]
    job_ids = [job.id for job in jobs]

    confirm = operator_client.post(
        reverse("admin:django_rq_confirm_action", args=[queue_index]), {"action": "delete", "_selected_action": job_ids}
    )
    operator_client.post(
        reverse("admin:django_rq_actions", args=[queue_index]), {"action": "delete", "job_ids": job_ids}
    )

    assert confirm.status_code == 200 and queue.count == 0
    entry = AuditEntry.objects.get(action__startswith="rq_dashboard_")
    assert entry.actor == operator and entry.details["action"] == "delete"
    assert sorted(entry.details["job_ids"]) == sorted(job_ids)


@pytest.mark.parametrize("name", ["admin:django_rq_home_json", "admin:django_rq_metrics"])
def test_django_rq_statistics_answer_only_staff_who_may_use_the_dashboard(viewer_client, operator_client, name):
    refused = viewer_client.get(reverse(name))

    assert refused.status_code in (401, 403)
    assert b"redis" not in refused.content.lower() and b"6393" not in refused.content
    assert operator_client.get(reverse(name)).status_code == 200


def test_django_rq_statistics_still_answer_the_api_token(client, settings):
    settings.RQ_API_TOKEN = "monitoring-token-0123456789"

    assert client.get(reverse("admin:django_rq_home_json")).status_code == 401
    answered = client.get(
        reverse("admin:django_rq_home_json"), headers={"Authorization": f"Bearer {settings.RQ_API_TOKEN}"}
    )
    assert answered.status_code == 200 and "queues" in answered.json()
