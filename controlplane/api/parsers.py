"""The management API's one body parser: JSON, checked as untrusted input.

It is the only entry of ``DEFAULT_PARSER_CLASSES``, so any other content type
(form bodies included) is refused by DRF with 415 ``unsupported_media_type``.
What JSON is acceptable is decided by ``controlplane.api.input``: stored text
must not hold NUL or lone surrogates, numbers must be finite, nesting is
bounded. A refusal names the field (``errors: {"attributes.tier": [...]}``).
A body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is refused with 413 before it is
read into memory.
"""

from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, renderers, status
from rest_framework.parsers import BaseParser

from controlplane.api.input import UntrustedInput, loads_json


class PayloadTooLarge(exceptions.APIException):
    """A request body over the accepted size (413)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def max_body_bytes() -> int | None:
    """Return the largest accepted body (Django's own limit; None = any)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def payload_too_large(limit: int | None = None) -> PayloadTooLarge:
    """Return the 413 error for a body over ``limit`` bytes."""
    limit = max_body_bytes() if limit is None else limit
    return PayloadTooLarge(f"The request body is over {limit} bytes.")


def _declared_length(parser_context: dict[str, Any] | None) -> int:
    request = (parser_context or {}).get("request")
    meta = getattr(request, "META", {}) if request is not None else {}
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class UntrustedJSONParser(BaseParser):
    """Parse a JSON body with ``loads_json``: NUL refused, depth bounded."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        """Return the parsed body; raise 413, or 400 naming the field."""
        limit = max_body_bytes()
        if limit is not None and _declared_length(parser_context) > limit:
            raise payload_too_large(limit)
        # Read one byte past the limit, never the whole of an oversized body.
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise payload_too_large(limit)
        try:
            return loads_json(raw, allow_nul=False)
        except UntrustedInput as exc:
            if exc.field:
                raise exceptions.ValidationError({exc.field: [exc.message]}) from None
            raise exceptions.ParseError(exc.message) from None
