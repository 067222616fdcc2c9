import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from backoffice.models import AuditEntry, Job
from reconciliation.matching import match_day
from reconciliation.models import Discrepancy, MatchingRun, SettlementFile
from tests.factories import UserFactory
from tests.helpers import logged_in, messages_of, run_action
from tests.reconciliation.conftest import PROCESSOR, ingest
from tests.reconciliation.daygen import HEADER

pytestmark = pytest.mark.needs_postgres

UPLOAD_URL = "/admin/reconciliation/settlementfile/add/"
QUEUE_URL = "/admin/reconciliation/discrepancy/"


@pytest.fixture
def finance_client(finance):
    return logged_in(finance)


def upload(client, content: bytes, name="report.csv"):
    return client.post(UPLOAD_URL, {"report": SimpleUploadedFile(name, content), "processor": PROCESSOR}, follow=True)


def test_finance_uploads_a_report_and_its_matching_is_queued(finance_client, make_day):
    generated = make_day(payments=100, per_kind=1)

    response = upload(finance_client, generated.csv_bytes)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("admin:reconciliation_day_report", args=[PROCESSOR, generated.day])
    assert f"Ingested {generated.lines} lines ({generated.lines} new); matching is queued." in messages_of(response)
    run = MatchingRun.objects.get()
    assert Job.objects.filter(pk=run.job_id, func="reconciliation.jobs.match_processor_day").exists()
    again = upload(finance_client, generated.csv_bytes, name="same.csv")
    assert "This exact file was ingested before: nothing changed." in messages_of(again)
    assert SettlementFile.objects.count() == 1 and MatchingRun.objects.count() == 1


def test_a_broken_upload_shows_every_bad_line_and_ingests_nothing(finance_client):
    content = (
        ",".join(HEADER) + "\nsl_1,charge,ch_1,k1,,10,EUR,2026-11-20T10:00:00Z\nsl_2,charge,ch_2,k2,,ten,EUR,x\n"
    ).encode()

    response = upload(finance_client, content)

    errors = response.context["form"].errors["report"]
    assert errors[0] == "1 bad line(s); nothing was ingested."
    assert errors[1].startswith("line 3: amount 'ten'")
    assert not SettlementFile.objects.exists()


def test_a_viewer_cannot_upload(db):
    viewer = logged_in(UserFactory(username="vera-viewer", roles=["Viewers"]))
    assert viewer.get(UPLOAD_URL).status_code == 403


def test_the_day_report_page_and_csv_count_every_class(finance_client, make_day):
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    url = reverse("admin:reconciliation_day_report", args=[PROCESSOR, generated.day])

    page = finance_client.get(url)
    csv_text = finance_client.get(url + "csv/").content.decode()

    report = page.context["report"]
    assert report.open_count == len(generated.all_injected())
    assert sum(row.count for row in report.section("their lines")) == generated.lines
    matched = sum(row.count for row in report.section("their lines") if row.category == "Matched")
    assert matched == generated.lines - Discrepancy.objects.filter(line__isnull=False).count()
    assert csv_text.splitlines()[0] == "processor,day,section,category,line_type,currency,count,amount_minor"
    assert f"{PROCESSOR},{generated.day},exceptions,Duplicate (open),,EUR" in csv_text or "Duplicate (open)" in csv_text
    assert len(csv_text.splitlines()) == len(report.rows) + 1


def test_the_queue_filters_and_accepting_is_audited(finance_client, make_day):
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)

    fee = finance_client.get(QUEUE_URL, {"kind__exact": "fee_mismatch", "status__exact": "open"})
    assert [entry.kind for entry in fee.context["cl"].result_list] == ["fee_mismatch"]
    for query in (
        {"amount": "small"},
        {"day__gte": str(generated.day), "processor__exact": PROCESSOR},
        {"merchant__id__exact": "1"},
    ):
        assert finance_client.get(QUEUE_URL, query).status_code == 200

    entries = list(Discrepancy.objects.filter(kind="duplicate"))
    response = run_action(finance_client, QUEUE_URL, "accept", entries, reason="the processor confirmed")

    assert f"{len(entries)} accepted" in messages_of(response)[0]
    assert set(Discrepancy.objects.filter(kind="duplicate").values_list("status", flat=True)) == {"resolved"}
    assert AuditEntry.objects.filter(action="discrepancy_accepted").count() == len(entries)


def test_linking_from_the_admin_refuses_an_unknown_record_and_keeps_the_entry_open(finance_client, make_day):
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    entry = Discrepancy.objects.filter(kind="missing_ours").first()
    url = reverse("admin:reconciliation_discrepancy_link", args=[entry.pk])

    response = finance_client.post(url, {"record": "pay_nosuchpayment", "reason": "found it"})

    assert response.status_code == 200
    assert "No payment, attempt or refund 'pay_nosuchpayment'." in response.context["form"].errors["record"]
    entry.refresh_from_db()
    assert entry.status == "open"


def test_a_viewer_sees_the_queue_but_cannot_resolve(make_day):
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    viewer = logged_in(UserFactory(username="vera-viewer", roles=["Viewers"]))
    entry = Discrepancy.objects.first()

    response = viewer.get(QUEUE_URL)

    assert response.status_code == 200
    assert response.context["action_form"] is None or "accept" not in str(response.context["action_form"])
    assert viewer.post(reverse("admin:reconciliation_discrepancy_link", args=[entry.pk]), {}).status_code == 403
    match_url = reverse("admin:reconciliation_day_match", args=[PROCESSOR, generated.day])
    assert viewer.post(match_url).status_code == 403
