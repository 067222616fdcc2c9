"""The processor's behaviour, read from the environment once at start."""

import os
from dataclasses import dataclass, field
from pathlib import Path

LIE_KINDS = ("amount", "currency", "status", "fee", "missing", "extra", "duplicate")


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def _rate(name: str) -> float:
    rate = _float(name, 0.0)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {rate}")
    return rate


def parse_lies(text: str) -> dict[str, int]:
    """ "amount=2,missing=1" -> {"amount": 2, "missing": 1}; unknown kinds are refused."""
    lies: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, count = item.partition("=")
        kind = kind.strip()
        if kind not in LIE_KINDS:
            raise ValueError(f"PROCESSOR_REPORT_LIES: unknown kind {kind!r}; expected one of {', '.join(LIE_KINDS)}")
        if not count.strip().isdigit():
            raise ValueError(f"PROCESSOR_REPORT_LIES: {kind} needs a whole number, not {count!r}")
        lies[kind] = int(count)
    return lies


@dataclass(frozen=True)
class Behaviour:
    host: str = "127.0.0.1"
    port: int = 8090
    db_path: Path = Path(".run/processor.sqlite3")
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # Share of charges/refunds/lookups that get no answer in time (a charge or refund is
    # recorded first: the case reconciliation and recovery exist for) and that answer 503
    # before recording anything.
    timeout_rate: float = 0.0
    error_rate: float = 0.0
    # How long an answer that "times out" is held: longer than any client's read timeout.
    hang_seconds: float = 30.0
    fee_bps: int = 150
    fee_fixed_minor: int = 0
    report_lies: dict[str, int] = field(default_factory=dict)
    report_seed: str = "paydesk"

    @classmethod
    def from_environment(cls) -> "Behaviour":
        root = Path(__file__).resolve().parent.parent
        return cls(
            host=os.environ.get("PROCESSOR_HOST", "127.0.0.1"),
            port=int(os.environ.get("PROCESSOR_PORT", "8090")),
            db_path=Path(os.environ.get("PROCESSOR_DB_PATH") or root / ".run" / "processor.sqlite3"),
            latency_ms=_float("PROCESSOR_LATENCY_MS", 0.0),
            jitter_ms=_float("PROCESSOR_LATENCY_JITTER_MS", 0.0),
            timeout_rate=_rate("PROCESSOR_TIMEOUT_RATE"),
            error_rate=_rate("PROCESSOR_ERROR_RATE"),
            hang_seconds=_float("PROCESSOR_HANG_SECONDS", 30.0),
            fee_bps=int(os.environ.get("PROCESSOR_FEE_BPS") or 150),
            fee_fixed_minor=int(os.environ.get("PROCESSOR_FEE_FIXED_MINOR") or 0),
            report_lies=parse_lies(os.environ.get("PROCESSOR_REPORT_LIES", "")),
            report_seed=os.environ.get("PROCESSOR_REPORT_SEED", "paydesk"),
        )


def fee_minor(amount_minor: int, *, bps: int, fixed_minor: int) -> int:
    """bps basis points of the amount, rounded half up, plus the fixed part (docs/settlement-report.md)."""
    return (amount_minor * bps * 2 + 10_000) // 20_000 + fixed_minor
