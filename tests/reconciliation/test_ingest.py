import pytest

from backoffice.models import AuditEntry
from reconciliation.ingest import ReportInvalid
from reconciliation.models import SettlementFile, SettlementLine
from tests.reconciliation.conftest import ingest
from tests.reconciliation.daygen import HEADER

pytestmark = pytest.mark.needs_postgres

GOOD = [
    "sl_1,charge,ch_1,pay_a_a1,,1250,EUR,2026-11-20T10:00:00.000001Z",
    "sl_2,fee,fe_1,,ch_1,19,EUR,2026-11-20T10:00:00.000001Z",
    "sl_3,refund,rf_1,re_b,ch_1,500,EUR,2026-11-20T11:00:00Z",
    "sl_4,payout,po_1,,,731,EUR,2026-11-20T23:59:00Z",
]


def report(*lines: str) -> bytes:
    return ("\n".join([",".join(HEADER), *lines]) + "\n").encode()


def test_the_same_file_twice_changes_nothing(db):
    first = ingest(report(*GOOD), filename="2026-11-20.csv")
    second = ingest(report(*GOOD), filename="again.csv")

    assert first.created and not second.created
    assert second.file == first.file
    assert SettlementFile.objects.count() == 1
    assert SettlementLine.objects.count() == 4
    assert AuditEntry.objects.filter(action="settlement_file_ingest").count() == 1
    line = SettlementLine.objects.get(line_id="sl_1")
    assert (line.line_type, line.amount_minor, line.currency, line.idempotency_key, line.line_number) == (
        "charge", 1250, "EUR", "pay_a_a1", 2,
    )  # fmt: skip
    assert first.file.day.isoformat() == "2026-11-20"


def test_a_new_download_of_the_day_adds_only_its_new_lines(db):
    ingest(report(*GOOD))
    later = ingest(report(*GOOD, "sl_5,charge,ch_2,pay_c_a1,,900,EUR,2026-11-20T12:00:00Z"))

    assert later.created
    assert (later.file.line_count, later.file.new_line_count) == (5, 1)
    assert SettlementLine.objects.count() == 5


def test_a_line_repeated_in_the_file_is_kept_as_a_second_occurrence(db):
    ingest(report(*GOOD, GOOD[0]))

    assert list(SettlementLine.objects.filter(line_id="sl_1").values_list("occurrence", "line_number")) == [
        (1, 2),
        (2, 6),
    ]


def test_a_broken_file_fails_whole_with_each_bad_line_and_changes_nothing(db):
    content = report(
        GOOD[0],
        "sl_x,charge,ch_9,pay_x_a1,,12.50,EUR,2026-11-20T10:00:00Z",  # line 3: decimal amount
        GOOD[1],
        "sl_y,chargeback,ch_9,,,100,EUR,2026-11-20T10:00:00Z",  # line 5: unknown type
        "sl_z,charge,ch_9,,,100,EURO,2026-11-20T10:00:00Z",  # line 6: no key, bad currency
        "sl_w,fee,fe_9,,ch_1,5,EUR,2026-11-21T00:00:00Z",  # line 7: another day
        "sl_v,refund,rf_9,re_x,ch_1,5,EUR",  # line 8: a field short
        "sl_u,charge,ch_8,pay_u_a1,,-5,EUR,2026-11-20 10:00:00",  # line 9: negative, bad time
    )

    with pytest.raises(ReportInvalid) as caught:
        ingest(content)

    errors = dict(caught.value.line_errors)
    assert sorted(errors) == [3, 5, 6, 7, 8, 9]
    assert "amount '12.50'" in errors[3]
    assert "unknown type 'chargeback'" in errors[5]
    assert "needs idempotency_key" in errors[6] and "currency 'EURO'" in errors[6]
    assert "not on the report's day 2026-11-20" in errors[7]
    assert "7 fields where the header has 8" in errors[8]
    assert "amount '-5'" in errors[9] and "not a UTC time" in errors[9]
    assert "line 3:" in caught.value.messages[0]
    assert not SettlementFile.objects.exists()
    assert not SettlementLine.objects.exists()
    assert not AuditEntry.objects.exists()


def test_a_header_without_a_contract_column_is_refused(db):
    content = b"line_id,type,processor_reference,amount_minor,currency,occurred_at\n"
    with pytest.raises(ReportInvalid) as caught:
        ingest(content)
    assert [number for number, _ in caught.value.line_errors] == [1, 1]
    assert "'idempotency_key'" in caught.value.line_errors[0][1]


def test_a_file_that_is_not_utf8_is_refused_with_the_line(db):
    content = report(GOOD[0]) + "sl_2,charge,ch_2,pay_é_a1,,1,EUR,2026-11-20T10:00:00Z\n".encode("latin-1")
    with pytest.raises(ReportInvalid) as caught:
        ingest(content)
    assert caught.value.line_errors == [(3, "not valid UTF-8 (reading stopped here)")]
    assert not SettlementLine.objects.exists()


def test_an_empty_report_needs_its_day(db):
    with pytest.raises(ReportInvalid):
        ingest(report())
    from datetime import date

    assert ingest(report(), day=date(2026, 11, 20)).file.line_count == 0
