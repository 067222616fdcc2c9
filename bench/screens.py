"""Every admin and portal screen at 10k and at 1M payments, timed in one process.

    make bench-screens                     # loads what is missing, then times
    .venv/bin/python bench/screens.py [--sizes 10000,1000000] [--rounds 7] [--reload]

Loads each size once into a database of its own on DATABASE_URL's server (<name>_screens_10k,
<name>_screens_1m; never the test database), with realistic shape: 50 merchants, one holding
30% of the payments, spread over the 90 days before the end of last month; per payment one
attempt, three events, three jobs (processing, two webhook deliveries), two notifications
with a delivery attempt each; 3% refunded, a few refunds awaiting approval, 0.5% unknown.
Rows are made by INSERT ... SELECT generate_series with the plain indexes dropped and rebuilt
after (a million payments and ~12M rows in a few minutes), then ANALYZE and the dashboard
figures. A later run reuses a loaded database (--reload makes it again).

Then, with the clock at the end of that month (time-machine, so "this month" is a whole
month), it GETs every screen of the table with Django's test client as a superuser (admin)
and as the owner of the largest merchant (portal): one warm-up each, then `--rounds` rounds,
each screen at each size in turn (interleaved), and prints the medians in ms and the ratio.
"""

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import _create_database_if_missing, bench_redis  # noqa: E402

MERCHANTS = 50
SPAN_DAYS = 90
TARGET_MS = 300
TARGET_RATIO = 1.5


def size_label(size: int) -> str:
    return f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k"


def screens_database_url(url: str | None, size: int) -> str:
    parts = urlsplit(url or "postgres://postgres@127.0.0.1:5432/paydesk")
    if not parts.scheme.startswith("postgres"):
        sys.exit("bench/screens.py needs PostgreSQL")
    name = (parts.path.lstrip("/") or "paydesk").removeprefix("test_")
    return urlunsplit(parts._replace(path=f"/{name}_screens_{size_label(size)}"))


def month_end() -> datetime:
    """20:00 UTC on the last day of last month: the bench's "now"."""
    first_of_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return first_of_month - timedelta(hours=4)


# --- loading ------------------------------------------------------------------------------------

LOADED_TABLES = [
    "payments_payment",
    "payments_paymentattempt",
    "payments_paymentevent",
    "payments_refund",
    "backoffice_job",
    "notifications_notification",
    "notifications_deliveryattempt",
]

STATUS_BY_BUCKET = """CASE
    WHEN i % 200 < 168 THEN 'succeeded' WHEN i % 200 < 184 THEN 'failed'
    WHEN i % 200 < 188 THEN 'refunded' WHEN i % 200 < 190 THEN 'partially_refunded'
    WHEN i % 200 < 194 THEN 'canceled' WHEN i % 200 = 194 THEN 'unknown' ELSE 'succeeded' END"""

LOAD_SQL = [
    # Payments: merchant 1 (index 0 of the array) holds 30%.
    f"""INSERT INTO payments_payment (id, public_id, amount_minor, currency, status, payment_method,
            merchant_reference, customer_email, description, idempotency_key, needs_review, created_at,
            updated_at, created_by_id, merchant_id)
        SELECT i, 'pay_' || substr(md5('p' || i), 1, 24), 500 + (i * 7919) % 100000,
            (ARRAY['EUR','EUR','EUR','USD','USD','GBP','CHF','JPY','SEK','PLN'])[1 + i % 10],
            {STATUS_BY_BUCKET}, 'tok_success', 'ORD-' || i,
            'customer' || (i % 250000) || '@' || (ARRAY['mail.example','shop.example','post.example'])[1 + i % 3],
            'Order ' || i, 'key-' || i, i % 400 = 194,
            %(anchor)s - (%(n)s - i) * %(step)s * interval '1 second',
            %(anchor)s - (%(n)s - i) * %(step)s * interval '1 second' + interval '3 seconds',
            NULL, (%(merchants)s::bigint[])[CASE WHEN i % 10 < 3 THEN 1 ELSE 2 + i % 49 END]
        FROM generate_series(1::bigint, %(n)s::bigint) AS i""",
    f"""INSERT INTO payments_paymentattempt (number, idempotency_key, outcome, gateway_reference, error_code,
            error_message, latency_ms, lookups, created_at, completed_at, payment_id)
        SELECT 1, 'pay_' || substr(md5('p' || i), 1, 24) || '_a1',
            CASE WHEN s = 'failed' THEN 'declined' WHEN s = 'unknown' THEN 'unknown' ELSE 'succeeded' END,
            'sim_ch_' || substr(md5('a' || i), 1, 20), CASE WHEN s = 'failed' THEN 'card_declined' ELSE '' END,
            '', 180 + i % 90, 0, created, created + interval '1 second', i
        FROM (SELECT i, {STATUS_BY_BUCKET} AS s,
                %(anchor)s - (%(n)s - i) * %(step)s * interval '1 second' AS created
              FROM generate_series(1::bigint, %(n)s::bigint) AS i) AS p
        WHERE s <> 'canceled'""",
    """INSERT INTO payments_paymentevent (from_status, to_status, actor_label, reason, created_at, actor_id,
            payment_id)
        SELECT (ARRAY['', 'pending', 'processing'])[k],
            CASE WHEN k = 1 THEN 'pending' WHEN k = 2 THEN 'processing' ELSE p.status END,
            'worker', '', p.created_at + k * interval '1 second', NULL, p.id
        FROM payments_payment AS p CROSS JOIN generate_series(1, 3) AS k""",
    """INSERT INTO payments_refund (public_id, amount_minor, reason, status, needs_approval, decision_note,
            gateway_reference, error_code, error_message, created_at, decided_at, completed_at, updated_at,
            approved_by_id, payment_id, rejected_by_id, requested_by_id)
        SELECT 're_' || substr(md5('r' || p.id), 1, 24), p.amount_minor / 2 + 1, 'customer returned the goods',
            CASE WHEN p.status IN ('refunded', 'partially_refunded') THEN 'succeeded' ELSE 'requested' END,
            p.status NOT IN ('refunded', 'partially_refunded'), '', 'sim_re_' || substr(md5('f' || p.id), 1, 20),
            '', '', p.created_at + interval '2 days', NULL, NULL, p.created_at + interval '2 days', NULL, p.id,
            NULL, %(staff)s
        FROM payments_payment AS p
        WHERE p.status IN ('refunded', 'partially_refunded') OR (p.status = 'succeeded' AND p.id %% 1000 = 7)""",
    """INSERT INTO notifications_notification (event_id, event_type, channel, destination, body, status,
            attempt_count, next_attempt_at, delivered_at, last_error, created_at, updated_at, merchant_id,
            payment_id, payment_event_id, requested_by_id, resend_of_id, endpoint_id, refund_id, payout_id)
        SELECT 'evt_' || substr(md5('n' || p.id || '_' || k), 1, 24),
            CASE WHEN k = 1 OR p.status NOT IN ('succeeded', 'failed', 'canceled', 'refunded',
                'partially_refunded') THEN 'payment.succeeded' ELSE 'payment.' || p.status END,
            'webhook', 'https://hooks.merchant' || p.merchant_id || '.example/paydesk',
            '{"type": "payment.' || p.status || '", "data": {"payment": "' || p.public_id
                || '", "amount_minor": ' || p.amount_minor || ', "currency": "' || p.currency
                || '", "merchant_reference": "' || p.merchant_reference || '", "status": "' || p.status
                || '"}, "timestamp": "' || p.created_at || '"}',
            'delivered', 1, NULL, p.created_at + interval '5 seconds', '', p.created_at + k * interval '1 second',
            p.created_at + interval '5 seconds', p.merchant_id, p.id, NULL, NULL, NULL,
            (%(endpoints)s::bigint[])[array_position(%(merchants)s::bigint[], p.merchant_id)], NULL, NULL
        FROM payments_payment AS p CROSS JOIN generate_series(1, 2) AS k""",
    """INSERT INTO notifications_deliveryattempt (number, destination, started_at, finished_at, duration_ms,
            http_status, succeeded, response_excerpt, error, notification_id)
        SELECT 1, n.destination, n.created_at + interval '1 second', n.created_at + interval '2 seconds', 120,
            200, true, '{"ok": true}', '', n.id
        FROM notifications_notification AS n""",
    # Jobs: the payment's processing, then each notification's delivery; one in 200 failed.
    """INSERT INTO backoffice_job (id, func, kwargs, queue, status, attempts, max_attempts, run_at, created_at,
            queued_at, started_at, heartbeat_at, finished_at, worker_name, last_error, traceback, result,
            object_id, content_type_id, requested_by_id, progress_done, progress_outcomes, progress_total,
            progress_updated_at)
        SELECT md5('j' || p.id)::uuid, 'payments.jobs.process_payment', jsonb_build_object('payment_id', p.id),
            'payments', 'succeeded', 1, 5, p.created_at, p.created_at, p.created_at, p.created_at,
            p.created_at, p.created_at + interval '1 second', 'bench', '', '', NULL, p.id::text,
            %(payment_type)s, NULL, 0, '{}'::jsonb, NULL, NULL
        FROM payments_payment AS p""",
    """INSERT INTO backoffice_job (id, func, kwargs, queue, status, attempts, max_attempts, run_at, created_at,
            queued_at, started_at, heartbeat_at, finished_at, worker_name, last_error, traceback, result,
            object_id, content_type_id, requested_by_id, progress_done, progress_outcomes, progress_total,
            progress_updated_at)
        SELECT md5('d' || n.id)::uuid, 'notifications.jobs.deliver_notification',
            jsonb_build_object('notification_id', n.id), 'notifications',
            CASE WHEN n.id %% 200 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 8, n.created_at, n.created_at,
            n.created_at, n.created_at, n.created_at, n.created_at + interval '2 seconds', 'bench',
            CASE WHEN n.id %% 200 = 0 THEN 'ConnectionError: receiver refused' ELSE '' END, '', NULL,
            n.id::text, %(notification_type)s, NULL, 0, '{}'::jsonb, NULL, NULL
        FROM notifications_notification AS n""",
]


# psycopg2 takes %(name)s parameters: the modulo operator is written %% in the statements.
LOAD_SQL = [sql.replace(" % ", " %% ") for sql in LOAD_SQL]


def _plain_indexes(cursor) -> list[tuple[str, str]]:
    """(name, CREATE INDEX ...) of the loaded tables' indexes that back no constraint."""
    cursor.execute(
        """SELECT i.indexname, i.indexdef FROM pg_indexes AS i
           WHERE i.tablename = ANY(%s) AND NOT EXISTS (
               SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)""",
        [LOADED_TABLES],
    )
    return cursor.fetchall()


def load(size: int, anchor: datetime) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    from notifications.models import Notification, WebhookEndpoint
    from payments.models import Membership, Merchant, Payment

    started = time.monotonic()
    users = get_user_model().objects
    admin = users.filter(username="bench-admin").first() or users.create_superuser("bench-admin", "a@x.example", None)
    owner = users.filter(username="bench-owner").first() or users.create_user("bench-owner", "o@x.example", None)
    staff = users.filter(username="bench-staff").first() or users.create_user("bench-staff", is_staff=True)
    with connection.cursor() as cursor, transaction.atomic():
        cursor.execute("SET LOCAL session_replication_role = replica")  # no triggers, no FK checks
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute("TRUNCATE " + ", ".join(LOADED_TABLES) + " CASCADE")
        merchants = list(Merchant.objects.order_by("pk").values_list("pk", flat=True))
        for number in range(len(merchants), MERCHANTS):
            merchant = Merchant.objects.create(
                name=f"Merchant {number:02d}", slug=f"merchant-{number:02d}", contact_email=f"m{number}@x.example"
            )
            merchants.append(merchant.pk)
        endpoints = []
        for merchant_id in merchants:
            endpoint = WebhookEndpoint.objects.filter(merchant_id=merchant_id).first()
            if endpoint is None:
                endpoint = WebhookEndpoint.objects.create(
                    merchant_id=merchant_id, url=f"https://hooks.merchant{merchant_id}.example/paydesk"
                )
            endpoints.append(endpoint.pk)
        Membership.objects.get_or_create(user=owner, merchant_id=merchants[0], defaults={"role": "owner"})
        indexes = _plain_indexes(cursor)
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        params = {
            "n": size,
            "anchor": anchor,
            "step": SPAN_DAYS * 86400 / size,
            "merchants": merchants,
            "endpoints": endpoints,
            "staff": staff.pk,
            "payment_type": ContentType.objects.get_for_model(Payment).pk,
            "notification_type": ContentType.objects.get_for_model(Notification).pk,
        }
        for sql in LOAD_SQL:
            began = time.monotonic()
            cursor.execute(sql, params)
            print(f"  {sql.split()[2]}: {cursor.rowcount:,} rows in {time.monotonic() - began:.0f} s", flush=True)
        began = time.monotonic()
        for _, definition in indexes:
            cursor.execute(definition)
        print(f"  {len(indexes)} indexes rebuilt in {time.monotonic() - began:.0f} s", flush=True)
        for table in ("payments_payment", "payments_refund", "notifications_notification"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    with connection.cursor() as cursor:
        for table in LOADED_TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    assert admin.is_superuser
    print(f"  loaded {size:,} payments in {time.monotonic() - started:.0f} s", flush=True)


def refresh_figures() -> None:
    from payments.figures import payment_figures_refresh

    payment_figures_refresh(days=SPAN_DAYS + 2)


def is_loaded(size: int) -> bool:
    from payments.models import Payment

    return Payment.objects.order_by().count() == size


# --- timing -------------------------------------------------------------------------------------


def screens(samples: dict) -> list[tuple[str, str, str]]:
    """(label, client, path) per screen; `samples` holds ids read from that database."""
    q = lambda term: "?" + urlencode({"q": term})  # noqa: E731
    week_ago = (samples["now"] - timedelta(days=7)).date().isoformat()
    return [
        ("admin payments, default", "admin", "/admin/payments/payment/"),
        ("admin payments, search by reference", "admin", "/admin/payments/payment/" + q(samples["reference"])),
        ("admin payments, search by e-mail", "admin", "/admin/payments/payment/" + q(samples["email"])),
        ("admin payments, search by public id", "admin", "/admin/payments/payment/" + q(samples["public_id"])),
        ("admin payments, search by processor ref", "admin", "/admin/payments/payment/" + q(samples["gateway"])),
        ("admin payments, failed in JPY", "admin", "/admin/payments/payment/?status__exact=failed&currency=JPY"),
        ("admin payments, one merchant", "admin", f"/admin/payments/payment/?merchant__id__exact={samples['small']}"),
        ("admin payments, page 100", "admin", "/admin/payments/payment/?p=100"),
        ("admin payment page", "admin", f"/admin/payments/payment/{samples['payment_pk']}/change/"),
        ("admin refunds, default", "admin", "/admin/payments/refund/"),
        ("admin refunds, awaiting approval", "admin", "/admin/payments/refund/?awaiting=any"),
        ("admin jobs, default", "admin", "/admin/backoffice/job/"),
        ("admin jobs, failed", "admin", "/admin/backoffice/job/?status__exact=failed"),
        ("admin jobs, by function", "admin", "/admin/backoffice/job/?func=payments.jobs.process_payment"),
        ("admin audit list", "admin", "/admin/backoffice/auditentry/"),
        ("ops dashboard (admin home)", "admin", "/admin/"),
        ("portal list", "portal", "/merchant/payments/"),
        ("portal search (reference)", "portal", "/merchant/payments/" + q(samples["own_reference"])),
        ("portal search (e-mail)", "portal", "/merchant/payments/" + q(samples["own_email"])),
        ("portal last 7 days", "portal", f"/merchant/payments/?date_from={week_ago}"),
        ("portal page 100", "portal", "/merchant/payments/?page=100"),
        ("portal payment page", "portal", f"/merchant/payments/{samples['own_public_id']}/"),
        ("portal dashboard at month end", "portal", "/merchant/"),
    ]


def read_samples(now: datetime) -> dict:
    from payments.models import Membership, Payment, PaymentAttempt

    largest = Membership.objects.get(user__username="bench-owner").merchant_id
    middle = Payment.objects.order_by().get(pk=Payment.objects.order_by("-pk").values("pk")[:1][0]["pk"] // 2)
    own = Payment.objects.filter(merchant_id=largest).order_by("-created_at")[500]
    return {
        "now": now,
        "reference": middle.merchant_reference,
        "email": middle.customer_email,
        "public_id": middle.public_id,
        "gateway": PaymentAttempt.objects.filter(payment=middle).values_list("gateway_reference", flat=True)[0],
        "payment_pk": middle.pk,
        "small": Payment.objects.exclude(merchant_id=largest).values_list("merchant_id", flat=True)[0],
        "own_reference": own.merchant_reference,
        "own_email": own.customer_email,
        "own_public_id": own.public_id,
    }


def _wrapper_for(database_url: str):
    import copy

    import environ
    from django.db import connections
    from django.db.utils import load_backend

    settings_dict = copy.deepcopy(connections.settings["default"])
    parsed = environ.Env.db_url_config(database_url)
    settings_dict.update(NAME=parsed["NAME"])
    backend = load_backend(settings_dict["ENGINE"])
    return backend.DatabaseWrapper(settings_dict, "default")


def use_database(wrapper) -> None:
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections

    connections["default"] = wrapper
    ContentType.objects.clear_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reload", action="store_true", help="load the databases again")
    args = parser.parse_args()
    sizes = [int(value) for value in args.sizes.split(",")]
    urls = {size: screens_database_url(os.environ.get("DATABASE_URL"), size) for size in sizes}
    now = month_end()

    with bench_redis(own=True, url=None) as redis_url:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="backoffice.settings",
            DATABASE_URL=urls[sizes[0]],
            REDIS_URL=redis_url,
            DJANGO_DEBUG="false",
            DJANGO_ALLOWED_HOSTS="testserver",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            PAYDESK_LOG_FORMAT="json",
        )
        import logging

        import django
        import time_machine
        from django.core.management import call_command
        from django.test import Client

        django.setup()
        logging.disable(logging.WARNING)
        wrappers = {}
        for size in sizes:
            _create_database_if_missing(urls[size])
            wrappers[size] = _wrapper_for(urls[size])
            use_database(wrappers[size])
            call_command("migrate", interactive=False, verbosity=0)
            if args.reload or not is_loaded(size):
                print(f"loading {size:,} payments into {urls[size].rsplit('/', 1)[-1]}", flush=True)
                load(size, now)
                with time_machine.travel(now, tick=True):
                    refresh_figures()

        from django.contrib.auth import get_user_model

        with time_machine.travel(now, tick=True):
            clients, samples = {}, {}
            for size in sizes:
                use_database(wrappers[size])
                users = get_user_model().objects
                admin, portal = Client(), Client()
                admin.force_login(users.get(username="bench-admin"))
                portal.force_login(users.get(username="bench-owner"))
                clients[size] = {"admin": admin, "portal": portal}
                samples[size] = read_samples(now)
            table = {size: screens(samples[size]) for size in sizes}
            labels = [label for label, _, _ in table[sizes[0]]]
            times: dict = {(label, size): [] for label in labels for size in sizes}
            for round_number in range(args.rounds + 1):  # round 0 warms up
                for index, label in enumerate(labels):
                    for size in sizes:
                        use_database(wrappers[size])
                        _, client, path = table[size][index]
                        began = time.perf_counter()
                        response = clients[size][client].get(path, secure=True)
                        elapsed = (time.perf_counter() - began) * 1000
                        if response.status_code != 200:
                            sys.exit(f"{label} at {size:,}: {path} answered {response.status_code}")
                        if round_number:
                            times[label, size].append(elapsed)
                print(f"round {round_number} done" if round_number else "warm-up done", flush=True)

    small, large = sizes[0], sizes[-1]
    print(f"\nmedians of {args.rounds}, ms; {small:,} and {large:,} payments, interleaved")
    print(f"| screen | {size_label(small)} | {size_label(large)} | ratio | under {TARGET_MS} ms and {TARGET_RATIO}x |")
    print("|---|---:|---:|---:|---|")
    for label in labels:
        low, high = statistics.median(times[label, small]), statistics.median(times[label, large])
        ok = high < TARGET_MS and high <= TARGET_RATIO * low
        print(f"| {label} | {low:.0f} | {high:.0f} | {high / low:.2f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
