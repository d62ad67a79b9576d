"""A small HTTP client over the standard library, bounded by a deadline."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from canary.providers.base import ProviderError

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: bytes
    latency_ms: float
    headers: dict


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[override]
        return None


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: dict | None = None,
    body: bytes | None = None,
    timeout: float,
    follow_redirects: bool = True,
) -> HttpResult:
    """Send one request; return status, body and latency in milliseconds.

    Any non-2xx status is a result, not an error. Raise ``ProviderError`` on
    a connection failure, a timeout (``timeout`` bounds the whole exchange,
    not each socket read) or a body over ``MAX_BODY_BYTES``.
    """
    request = urllib.request.Request(
        url, data=body, method=method, headers=headers or {}
    )
    handlers = [] if follow_redirects else [_NoRedirect()]
    opener = urllib.request.build_opener(*handlers)
    started = time.perf_counter()
    deadline = started + timeout
    try:
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.perf_counter() > deadline:
                    raise ProviderError(f"timed out after {timeout:g}s reading {url}")
                chunk = response.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ProviderError(
                        f"response from {url} is larger than {MAX_BODY_BYTES} bytes"
                    )
                chunks.append(chunk)
            status = response.status if hasattr(response, "status") else response.code
            response_headers = (
                dict(response.headers.items()) if response.headers else {}
            )
    except ProviderError:
        raise
    except TimeoutError as error:
        raise ProviderError(f"timed out after {timeout:g}s: {url}") from error
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise ProviderError(f"timed out after {timeout:g}s: {url}") from error
        raise ProviderError(f"cannot reach {url}: {reason}") from error
    except (OSError, ValueError) as error:
        raise ProviderError(f"request to {url} failed: {error}") from error
    latency_ms = (time.perf_counter() - started) * 1000.0
    if latency_ms > timeout * 1000.0:
        raise ProviderError(f"timed out after {timeout:g}s: {url}")
    return HttpResult(
        status=int(status),
        body=b"".join(chunks),
        latency_ms=latency_ms,
        headers=response_headers,
    )
