"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the reference
`standardwebhooks` package so that merchants can verify with any language's library."""

import base64
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_signing_secret() -> str:
    """A fresh endpoint secret: `whsec_` and 32 random bytes in base64, as the spec shows."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature_headers(*, message_id: str, body: str, signing_secrets: Iterable[str], at: datetime) -> dict[str, str]:
    """The three webhook-* headers for one attempt. Every secret given signs (the current one
    and, during a rotation, the previous one), so receivers on either secret accept it."""
    timestamp = datetime.fromtimestamp(int(at.timestamp()), tz=UTC)
    signatures = [Webhook(secret).sign(msg_id=message_id, timestamp=timestamp, data=body) for secret in signing_secrets]
    if not signatures:
        raise ValueError("A webhook needs at least one signing secret.")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def mask_secret(secret: str) -> str:
    """What staff see in lists: enough to tell two secrets apart, not enough to sign."""
    if not secret:
        return ""
    return f"{secret[: len(SECRET_PREFIX) + 4]}…{secret[-2:]}"
