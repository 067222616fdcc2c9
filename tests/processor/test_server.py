"""The processor service over real HTTP: outcomes by token, idempotency under concurrency,
lookups, refusals, and the settlement report of docs/settlement-report.md."""

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

import aiohttp
import pytest

from processor.config import fee_minor, parse_lies
from tests.helpers import run_coroutine


def today() -> str:
    """The processor's day now (UTC), read when a test runs: a suite can run past midnight."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def post(processor, path: str, body, key: str | None = "k") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key else {})
    request = urllib.request.Request(processor.url + path, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def charge(processor, key: str, token: str = "tok_success", amount: int = 1000, currency: str = "EUR"):
    body = {"amount_minor": amount, "currency": currency, "payment_method": token, "reference": "pay_x"}
    return post(processor, "/v1/charges", body, key=key)


def report(processor, day: str | None = None) -> list[dict]:
    day = day or today()
    return list(csv.DictReader(io.StringIO(processor.get_text(f"/v1/settlements/{day}.csv"))))


@pytest.fixture
def processor(start_processor):
    return start_processor()


def test_tokens_decide_the_outcome_and_a_repeat_returns_the_first_answer(processor):
    assert charge(processor, "a", "tok_success")[1]["status"] == "succeeded"
    status, declined = charge(processor, "b", "tok_decline")
    assert (status, declined["status"], declined["decline_code"]) == (200, "declined", "card_declined")
    assert charge(processor, "c", "tok_other")[1]["decline_code"] == "invalid_payment_method"
    assert charge(processor, "d", "tok_error")[0] == 503

    first, again = charge(processor, "a")[1], charge(processor, "a")[1]
    assert first == again and first["id"].startswith("ch_")
    assert len(processor.operations("a")) == 1
    assert processor.get_json("/v1/operations/a")["id"] == first["id"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        processor.get_json("/v1/operations/d")  # the 503 recorded nothing
    assert missing.value.code == 404


def test_a_key_reused_with_other_parameters_is_refused_and_changes_nothing(processor):
    charge(processor, "k1", amount=1000)
    status, body = charge(processor, "k1", amount=2000)
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reused")
    assert [op["amount_minor"] for op in processor.operations("k1")] == [1000]


@pytest.mark.parametrize(
    "body, key, code",
    [
        ({"amount_minor": 10, "currency": "EUR", "payment_method": "tok_success"}, None, "idempotency_key_required"),
        ({"amount_minor": 0, "currency": "EUR", "payment_method": "tok_success"}, "k", "invalid_amount"),
        ({"amount_minor": "10", "currency": "EUR", "payment_method": "tok_success"}, "k", "invalid_amount"),
        ({"amount_minor": 10, "currency": "eur", "payment_method": "tok_success"}, "k", "invalid_currency"),
        (
            {"amount_minor": 10, "currency": "EUR", "payment_method": "4242 4242 4242 4242"},
            "k",
            "invalid_payment_method",
        ),
        ([1, 2], "k", "invalid_json"),
    ],
)
def test_bad_requests_are_refused_without_echo_and_record_nothing(processor, body, key, code):
    status, answer = post(processor, "/v1/charges", body, key=key)
    assert (status, answer["error"]["code"]) == (400, code)
    assert "4242" not in json.dumps(answer)
    assert report(processor) == []


def test_refund_outcomes_by_amount_and_never_beyond_the_charge(processor):
    reference = charge(processor, "ch", amount=5000)[1]["id"]

    def refund(key, amount, charge_reference=reference):
        body = {"charge": charge_reference, "amount_minor": amount, "currency": "EUR"}
        return post(processor, "/v1/refunds", body, key=key)

    assert refund("r1", 1000)[1]["status"] == "succeeded"
    assert refund("r1", 1000)[1]["id"] == refund("r1", 1000)[1]["id"]  # once, whatever the repeats
    assert refund("r2", 1013)[1]["decline_code"] == "refund_declined"
    assert refund("r3", 1015)[0] == 503 and refund("r3", 1015)[1]["status"] == "succeeded"
    assert refund("r4", 4000)[1]["decline_code"] == "amount_exceeds_charge"
    assert refund("r5", 100, "ch_nothing")[1]["decline_code"] == "no_such_charge"


def test_a_timed_out_charge_is_recorded_and_found_by_lookup(start_processor):
    processor = start_processor(PROCESSOR_HANG_SECONDS=0.3)
    status, _ = charge(processor, "t", "tok_timeout")
    assert status == 504  # held past the hang; a client with a shorter read timeout gave up before
    assert processor.get_json("/v1/operations/t")["status"] == "succeeded"


def test_hundreds_of_concurrent_requests_under_one_key_charge_once(start_processor):
    processor = start_processor(PROCESSOR_LATENCY_MS=100)

    async def storm():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:

            async def one(key):
                body = {"amount_minor": 700, "currency": "EUR", "payment_method": "tok_success"}
                async with session.post(
                    f"{processor.url}/v1/charges", json=body, headers={"Idempotency-Key": key}
                ) as r:
                    return (await r.json())["id"]

            same = await asyncio.gather(*(one("same") for _ in range(150)))
            distinct = await asyncio.gather(*(one(f"key-{n}") for n in range(150)))
            return same, distinct

    same, distinct = run_coroutine(storm())
    assert len(set(same)) == 1
    assert len(set(distinct)) == 150
    assert len(processor.operations("same")) == 1 and len(processor.operations("key-")) == 150


def test_the_settlement_report_follows_the_contract(start_processor):
    processor = start_processor(PROCESSOR_FEE_BPS=150, PROCESSOR_FEE_FIXED_MINOR=25)
    day = today()
    references = {key: charge(processor, key, amount=amount)[1]["id"] for key, amount in [("c1", 1000), ("c2", 333)]}
    charge(processor, "c3", "tok_decline")
    post(processor, "/v1/refunds", {"charge": references["c1"], "amount_minor": 400, "currency": "EUR"}, key="r1")

    text = processor.get_text(f"/v1/settlements/{day}.csv")
    assert text.splitlines()[0] == (
        "line_id,type,processor_reference,idempotency_key,charge_reference,amount_minor,currency,occurred_at"
    )
    assert text.endswith("\n") and "\r" not in text
    lines = report(processor, day)
    assert [line["type"] for line in lines] == ["charge", "fee", "charge", "fee", "refund", "payout"]
    fee_c2 = next(line for line in lines if line["type"] == "fee" and line["charge_reference"] == references["c2"])
    assert fee_c2["amount_minor"] == str(5 + 25)  # 333 * 1.5% = 4.995, half up -> 5, plus the fixed 25
    payout = lines[-1]
    assert payout["amount_minor"] == str(1000 + 333 - (15 + 25) - (5 + 25) - 400)
    assert payout["processor_reference"].startswith("po_") and payout["occurred_at"] == f"{day}T23:59:59.999999Z"
    assert all(line["line_id"].startswith("sl_") for line in lines)
    assert len({line["line_id"] for line in lines}) == len(lines)
    assert report(processor, day) == lines  # stable across downloads
    assert report(processor, "2001-01-01") == []


def test_fee_rounds_half_up():
    assert fee_minor(100, bps=150, fixed_minor=0) == 2  # 1.5 -> 2
    assert fee_minor(99, bps=150, fixed_minor=0) == 1  # 1.485 -> 1
    assert fee_minor(1000, bps=0, fixed_minor=30) == 30


def test_told_to_lie_the_report_carries_exactly_the_listed_discrepancies(start_processor):
    lies = {"amount": 2, "currency": 1, "status": 1, "fee": 1, "missing": 1, "extra": 2, "duplicate": 1}
    processor = start_processor(PROCESSOR_REPORT_LIES=",".join(f"{kind}={n}" for kind, n in lies.items()))
    day = today()
    for n in range(10):
        charge(processor, f"ok-{n}", amount=1000 + n)
    charge(processor, "no-1", "tok_decline", amount=999)

    lines = report(processor, day)
    listed = processor.get_json(f"/v1/settlements/{day}/injected.json")
    injected = listed["injected"]
    assert listed["requested"] == lies
    assert sorted(item["kind"] for item in injected) == sorted(kind for kind, n in lies.items() for _ in range(n))
    by_kind = {kind: [item for item in injected if item["kind"] == kind] for kind in lies}
    by_id = {}
    for line in lines:
        by_id.setdefault(line["line_id"], []).append(line)
    for item in by_kind["amount"]:
        assert by_id[item["line_id"]][0]["amount_minor"] == str(item["reported_value"]) != str(item["true_value"])
    assert by_id[by_kind["currency"][0]["line_id"]][0]["currency"] == "USD"
    assert by_id[by_kind["fee"][0]["line_id"]][0]["type"] == "fee"
    assert by_kind["missing"][0]["line_id"] not in by_id
    assert len(by_id[by_kind["duplicate"][0]["line_id"]]) == 2
    assert by_id[by_kind["status"][0]["line_id"]][0]["idempotency_key"] == "no-1"
    assert all(by_id[item["line_id"]][0]["idempotency_key"].startswith("pay_unknown") for item in by_kind["extra"])
    # No line carries two lies, and the payout is the true net.
    assert len({item["line_id"] for item in injected}) == len(injected)
    assert report(processor) == lines


def test_lies_are_parsed_strictly():
    assert parse_lies(" amount=2, missing=0 ") == {"amount": 2, "missing": 0}
    with pytest.raises(ValueError, match="unknown kind"):
        parse_lies("amount=1,colour=2")
    with pytest.raises(ValueError, match="whole number"):
        parse_lies("amount=-1")
