"""What the hot path reads from a WSGI request: body, path, host, query.

The same rules as Django's request cycle for these endpoints: the body
limits of ``controlplane.api.errors.read_body``, the host check of
``ALLOWED_HOSTS`` (Django's ``CommonMiddleware``) and the query-string check
of ``controlplane.middleware.UntrustedRequestMiddleware``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.encoding import repercent_broken_unicode

from controlplane.api.errors import DRAIN_MAX_BYTES, RequestRefused
from flags.hotpath.settings import django_setting

_CHUNK = 64 * 1024


def _too_large(max_bytes: int) -> RequestRefused:
    return RequestRefused(
        413, "PAYLOAD_TOO_LARGE", f"the body is over {max_bytes} bytes", field="body"
    )


def _drain(stream: Any, left: int) -> None:
    """Read and drop up to ``left`` bytes, so the client reads the answer."""
    left = min(left, DRAIN_MAX_BYTES)
    try:
        while left > 0:
            chunk = stream.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):
        return


def _read_exactly(stream: Any, length: int) -> bytes:
    # A server's read(n) may return less than n before the end: loop.
    first = stream.read(length)
    if len(first) >= length or not first:
        return first
    parts = [first]
    total = len(first)
    while total < length:
        part = stream.read(length - total)
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def read_body(environ: Mapping[str, Any], max_bytes: int) -> bytes:
    """Return the body of a WSGI request, never holding more than the limit.

    As ``controlplane.api.errors.read_body``: a declared ``Content-Length``
    over ``max_bytes`` is 413 (the rest is drained, not kept); a body
    without one is read when the server bounds the input
    (``wsgi.input_terminated``), at most ``max_bytes + 1`` bytes, else a
    ``Transfer-Encoding`` without a length is 411; no length and no
    transfer encoding is an empty body.
    """
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        try:
            declared = int(length)
        except ValueError:
            raise RequestRefused(
                400, "PARSE_ERROR", "bad Content-Length header", field="body"
            ) from None
        if declared > max_bytes:
            if environ.get("wsgi.input_terminated"):
                _drain(stream, DRAIN_MAX_BYTES)
            else:
                _drain(stream, declared)
            raise _too_large(max_bytes)
        if declared <= 0:
            return b""
        return _read_exactly(stream, declared)
    if environ.get("wsgi.input_terminated"):
        parts: list[bytes] = []
        total = 0
        while total <= max_bytes:
            part = stream.read(max_bytes + 1 - total)
            if not part:
                break
            parts.append(part)
            total += len(part)
        raw = b"".join(parts)
        if len(raw) > max_bytes:
            raise _too_large(max_bytes)
        return raw
    if environ.get("HTTP_TRANSFER_ENCODING"):
        raise RequestRefused(
            411,
            "LENGTH_REQUIRED",
            "send a Content-Length header (this server cannot read a chunked body)",
            field="body",
        )
    return b""


def path_info(environ: Mapping[str, Any]) -> str:
    """Return the request path as Django decodes it (UTF-8, broken bytes %-ed)."""
    path = environ.get("PATH_INFO", "/")
    if path.isascii():
        return path
    raw = path.encode("latin-1", "replace")
    return repercent_broken_unicode(raw).decode("utf-8")


class HostCheck:
    """``ALLOWED_HOSTS`` as Django's ``request.get_host()`` applies it.

    Decisions are cached per Host header value (a bounded number), and the
    cache follows the settings object, so tests that change
    ``ALLOWED_HOSTS`` are honoured.
    """

    _MAX = 1000

    def __init__(self) -> None:
        self._allowed: object = None
        self._decided: dict[str, bool] = {}

    def is_allowed(self, environ: Mapping[str, Any]) -> bool:
        host = environ.get("HTTP_HOST")
        if not host:
            host = environ.get("SERVER_NAME", "")
            port = str(environ.get("SERVER_PORT", ""))
            if port and port != ("443" if _is_secure(environ) else "80"):
                host = f"{host}:{port}"
        allowed_hosts = django_setting("ALLOWED_HOSTS")
        if allowed_hosts is not self._allowed:
            self._allowed, self._decided = allowed_hosts, {}
        decided = self._decided.get(host)
        if decided is None:
            allowed = allowed_hosts
            if settings.DEBUG and not allowed:
                allowed = [".localhost", "127.0.0.1", "[::1]"]
            domain, _port = split_domain_port(host)
            decided = bool(domain and validate_host(domain, allowed))
            if len(self._decided) < self._MAX:
                self._decided[host] = decided
        return decided


def _is_secure(environ: Mapping[str, Any]) -> bool:
    return environ.get("wsgi.url_scheme") == "https"
