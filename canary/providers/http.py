"""``http``: the status, latency or a JSON field of one HTTP request.

Spec: ``{"url", "method"?: "GET", "expect_status"?: 200, "json_path"?:
"a.b.0.c", "measure": "latency_ms" | "status" | "json_value", "headers"?:
{...}}``. A connection error or a timeout is a ``ProviderError``. For
``latency_ms`` and ``json_value`` an unexpected status is an error too (a
fast 500 must not pass a latency check); ``status`` measures the code itself.
"""

from __future__ import annotations

import json
import math
from typing import Any

from canary.providers._http import http_request
from canary.providers.base import (
    MeasureContext,
    Measurement,
    ProviderError,
    reject_unknown,
    require_mapping,
    require_str,
    validate_url,
)
from controlplane.exceptions import InvalidInput

MEASURES = ("latency_ms", "status", "json_value")
METHODS = ("GET", "HEAD", "POST")
_MISSING = object()


def json_path_get(document: Any, path: str) -> Any:
    """Return the value at dotted ``path`` ("a.b.0.c"), or ``_MISSING``."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _as_number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"{type(value).__name__} is not a number")


class HttpProvider:
    name = "http"

    def validate_spec(self, spec: dict) -> dict:
        """Return the normalised spec or raise ``InvalidInput``."""
        spec = require_mapping(spec)
        reject_unknown(
            spec, {"url", "method", "expect_status", "json_path", "measure", "headers"}
        )
        clean: dict = {"url": validate_url(spec, "url", require_str(spec, "url"))}
        measure = spec.get("measure")
        if measure not in MEASURES:
            raise InvalidInput(
                f"must be one of {', '.join(MEASURES)}", field="spec.measure"
            )
        clean["measure"] = measure
        method = str(spec.get("method") or "GET").upper()
        if method not in METHODS:
            raise InvalidInput(
                f"must be one of {', '.join(METHODS)}", field="spec.method"
            )
        clean["method"] = method
        expect = spec.get("expect_status", 200)
        if (
            isinstance(expect, bool)
            or not isinstance(expect, int)
            or not 100 <= expect <= 599
        ):
            raise InvalidInput(
                "must be an HTTP status code (100-599)", field="spec.expect_status"
            )
        clean["expect_status"] = expect
        if measure == "json_value":
            clean["json_path"] = require_str(spec, "json_path")
        elif spec.get("json_path") is not None:
            raise InvalidInput(
                'only used with measure "json_value"', field="spec.json_path"
            )
        headers = spec.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidInput("must be an object of strings", field="spec.headers")
        if headers:
            clean["headers"] = headers
        return clean

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Send the request once and return the measured value."""
        spec = self.validate_spec(spec)
        result = http_request(
            spec["url"],
            method=spec["method"],
            headers=spec.get("headers"),
            timeout=timeout,
        )
        detail: dict = {
            "url": spec["url"],
            "method": spec["method"],
            "status": result.status,
            "expect_status": spec["expect_status"],
            "latency_ms": round(result.latency_ms, 3),
            "measure": spec["measure"],
        }
        if spec["measure"] == "status":
            detail["unit"] = "status"
            return Measurement(value=float(result.status), samples=1, detail=detail)
        if result.status != spec["expect_status"]:
            raise ProviderError(
                f"{spec['url']} answered HTTP {result.status}, expected {spec['expect_status']}",
                detail=detail,
            )
        if spec["measure"] == "latency_ms":
            detail["unit"] = "ms"
            return Measurement(value=result.latency_ms, samples=1, detail=detail)
        detail["json_path"] = spec["json_path"]
        try:
            document = json.loads(result.body)
        except ValueError:
            raise ProviderError(
                f"{spec['url']} did not answer JSON", detail=detail
            ) from None
        raw = json_path_get(document, spec["json_path"])
        if raw is _MISSING:
            raise ProviderError(
                f"json_path {spec['json_path']!r} not found in the response",
                detail=detail,
            )
        detail["raw"] = (
            raw
            if isinstance(raw, (int, float, str, bool)) or raw is None
            else repr(raw)[:200]
        )
        if raw is None:
            return Measurement(value=None, samples=0, detail=detail)
        try:
            value = _as_number(raw)
        except ValueError as error:
            raise ProviderError(
                f"json_path {spec['json_path']!r} is not a number: {error}",
                detail=detail,
            ) from None
        if math.isnan(value):
            return Measurement(value=None, samples=0, detail=detail)
        return Measurement(value=value, samples=1, detail=detail)
