"""Send one notice over the network: a signed webhook or an apprise URL.

No ORM access here: the caller loads the delivery, calls ``send`` outside
any transaction and records the answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import apprise
import requests

from controlplane.notifications.signing import signed_headers

SHORT = 300  # characters kept of an error or an answer, never a whole body


@dataclass(frozen=True)
class Answer:
    is_ok: bool
    duration_ms: float
    status_code: int | None = None
    error: str = ""
    answer: str = ""


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def send_webhook(
    *,
    url: str,
    secret: str,
    body: str,
    delivery_id: int,
    kind: str,
    timeout: float,
) -> Answer:
    """POST ``body`` signed with ``secret``; a 2xx answer is a delivery."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "controlplane-notifications",
        "X-Controlplane-Delivery": str(delivery_id),
        "X-Controlplane-Event": kind,
        **signed_headers(secret, body),
    }
    started = time.monotonic()
    try:
        response = requests.post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,  # read at most a few hundred bytes of the answer
        )
    except requests.RequestException as exc:
        return Answer(
            False,
            (time.monotonic() - started) * 1000,
            error=_short(f"{type(exc).__name__}: {exc}"),
        )
    try:
        excerpt = response.raw.read(SHORT, decode_content=True) or b""
    except Exception:  # noqa: BLE001 - the status already says enough
        excerpt = b""
    finally:
        response.close()
    duration = (time.monotonic() - started) * 1000
    text = _short(excerpt.decode("utf-8", "replace"))
    is_ok = 200 <= response.status_code < 300
    error = "" if is_ok else f"HTTP {response.status_code} {response.reason or ''}"
    return Answer(is_ok, duration, response.status_code, _short(error), text)


def apprise_url_is_valid(url: str) -> bool:
    """Return whether apprise understands ``url`` (no network access)."""
    return apprise.Apprise.instantiate(url) is not None


def send_apprise(*, url: str, title: str, body: str) -> Answer:
    """Notify through apprise; its log (warnings and up) is the error text."""
    started = time.monotonic()
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return Answer(False, 0.0, error="apprise does not understand this URL")
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as log:
        try:
            is_ok = bool(notifier.notify(title=title, body=body))
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is an answer
            is_ok, log_text = False, f"{type(exc).__name__}: {exc}"
        else:
            log_text = log.getvalue()
    duration = (time.monotonic() - started) * 1000
    lines = [line for line in log_text.splitlines() if line.strip()]
    error = "" if is_ok else _short(" | ".join(lines[-3:]) or "apprise: not sent")
    return Answer(is_ok, duration, error=error)
