"""The processor's own ledger: one SQLite file, one row per charge or refund, keyed by the
idempotency key the client sent. The server is one asyncio process and never awaits between
reading and writing a key, so two requests under the same key cannot both record."""

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    idempotency_key  TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('charge', 'refund')),
    fingerprint      TEXT NOT NULL,
    payment_method   TEXT NOT NULL DEFAULT '',
    charge_reference TEXT NOT NULL DEFAULT '',
    amount_minor     INTEGER NOT NULL CHECK (amount_minor > 0),
    currency         TEXT NOT NULL,
    approved         INTEGER NOT NULL,
    decline_code     TEXT NOT NULL DEFAULT '',
    reference        TEXT NOT NULL UNIQUE,
    line_id          TEXT NOT NULL UNIQUE,
    fee_minor        INTEGER NOT NULL DEFAULT 0,
    fee_reference    TEXT NOT NULL DEFAULT '',
    fee_line_id      TEXT NOT NULL DEFAULT '',
    occurred_at      TEXT NOT NULL,
    day              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_day ON operations (day, occurred_at);
CREATE INDEX IF NOT EXISTS operations_charge ON operations (charge_reference) WHERE kind = 'refund';
CREATE TABLE IF NOT EXISTS markers (name TEXT PRIMARY KEY);
"""

DECLINE_MESSAGES = {
    "": "",
    "card_declined": "The card was declined by the issuer.",
    "invalid_payment_method": "The payment method token is not valid.",
    "refund_declined": "The processor declined the refund.",
    "no_such_charge": "The processor has no captured charge with this reference.",
    "amount_exceeds_charge": "The refund would exceed what was charged.",
}


@dataclass(frozen=True)
class Operation:
    idempotency_key: str
    kind: str
    fingerprint: str
    payment_method: str
    charge_reference: str
    amount_minor: int
    currency: str
    approved: bool
    decline_code: str
    reference: str
    line_id: str
    fee_minor: int
    fee_reference: str
    fee_line_id: str
    occurred_at: str
    day: str

    def answer(self) -> dict:
        return {
            "id": self.reference,
            "object": self.kind,
            "status": "succeeded" if self.approved else "declined",
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "decline_code": self.decline_code,
            "message": DECLINE_MESSAGES.get(self.decline_code, ""),
        }


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used only from the event loop's thread.
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process (not of the machine's power).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, idempotency_key: str) -> Operation | None:
        row = self.db.execute("SELECT * FROM operations WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        return None if row is None else _operation(row)

    def by_prefix(self, prefix: str) -> list[Operation]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.db.execute(
            "SELECT * FROM operations WHERE idempotency_key LIKE ? ESCAPE '\\' ORDER BY occurred_at",
            (escaped + "%",),
        )
        return [_operation(row) for row in rows]

    def charge_by_reference(self, reference: str) -> Operation | None:
        row = self.db.execute(
            "SELECT * FROM operations WHERE reference = ? AND kind = 'charge'", (reference,)
        ).fetchone()
        return None if row is None else _operation(row)

    def refunded_minor(self, charge_reference: str, *, except_key: str) -> int:
        row = self.db.execute(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM operations "
            "WHERE kind = 'refund' AND approved = 1 AND charge_reference = ? AND idempotency_key != ?",
            (charge_reference, except_key),
        ).fetchone()
        return row[0]

    def record(self, *, idempotency_key: str, kind: str, fee_minor: int = 0, **fields) -> Operation:
        """Insert the operation under this key unless one exists; return the one that stands."""
        existing = self.get(idempotency_key)
        if existing is not None:
            return existing
        now = datetime.now(UTC)
        charge = kind == "charge"
        approved = bool(fields["approved"])
        self.db.execute(
            "INSERT INTO operations (idempotency_key, kind, fingerprint, payment_method, charge_reference, "
            "amount_minor, currency, approved, decline_code, reference, line_id, fee_minor, fee_reference, "
            "fee_line_id, occurred_at, day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (
                idempotency_key,
                kind,
                fields["fingerprint"],
                fields.get("payment_method", ""),
                fields.get("charge_reference", ""),
                fields["amount_minor"],
                fields["currency"],
                int(approved),
                fields.get("decline_code", ""),
                new_id("ch_" if charge else "rf_"),
                new_id("sl_"),
                fee_minor if charge and approved else 0,
                new_id("fe_") if charge and approved else "",
                new_id("sl_") if charge and approved else "",
                utc_stamp(now),
                now.strftime("%Y-%m-%d"),
            ),
        )
        stored = self.get(idempotency_key)
        if stored is None:  # the INSERT above, or an earlier one under the key, put it there
            raise RuntimeError(f"operation {idempotency_key} was not stored")
        return stored

    def mark_once(self, name: str) -> bool:
        """True the first time a marker is set (a one-off behaviour under a key)."""
        return self.db.execute("INSERT OR IGNORE INTO markers (name) VALUES (?)", (name,)).rowcount == 1

    def day(self, day: str) -> list[Operation]:
        rows = self.db.execute("SELECT * FROM operations WHERE day = ? ORDER BY occurred_at, line_id", (day,))
        return [_operation(row) for row in rows]


def _operation(row: sqlite3.Row) -> Operation:
    values = dict(row)
    values["approved"] = bool(values["approved"])
    return Operation(**values)
