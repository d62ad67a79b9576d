"""HMAC-SHA256 signatures of webhook bodies, timestamped against replays.

The signature covers ``f"{timestamp}.{body}"``: a receiver recomputes it
with the shared secret, compares in constant time and rejects a timestamp
older than a few minutes (docs/notifications.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

TIMESTAMP_HEADER = "X-Controlplane-Timestamp"
SIGNATURE_HEADER = "X-Controlplane-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """Return a fresh webhook secret (32 random bytes, URL-safe text)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: str) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, body: str, *, now: float | None = None) -> dict:
    """Return the timestamp and signature headers for ``body``, signed now."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(
    secret: str,
    timestamp: str,
    body: str,
    signature: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Return whether ``signature`` is valid and ``timestamp`` recent enough.

    What a receiver does; the tests use it as their receiver.
    """
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature or "")
