"""``prometheus``: one PromQL instant query over the Prometheus HTTP API.

Spec: ``{"url"?: base URL (default: setting PROMETHEUS_URL), "query": PromQL,
"aggregate"?: "sum" | "avg" | "min" | "max"}``. An empty result vector or NaN
is no data; several series are an error unless ``aggregate`` says how to
combine them.
"""

from __future__ import annotations

import json
import math
from urllib.parse import urlencode

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

AGGREGATES = {
    "sum": sum,
    "avg": lambda values: sum(values) / len(values),
    "min": min,
    "max": max,
}


def _parse_sample(raw: object) -> float:
    try:
        return float(raw[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError) as error:
        raise ProviderError(
            f"unexpected sample in Prometheus response: {raw!r}"
        ) from error


class PrometheusProvider:
    name = "prometheus"

    def validate_spec(self, spec: dict) -> dict:
        """Return ``{"url", "query", "aggregate"}`` or raise ``InvalidInput``."""
        spec = require_mapping(spec)
        reject_unknown(spec, {"url", "query", "aggregate", "comparison_query"})
        clean: dict = {"query": require_str(spec, "query")}
        if spec.get("comparison_query") is not None:
            # What the value is compared with (e.g. the same metric of the
            # control), for relative mode: worse / not worse against it.
            clean["comparison_query"] = require_str(spec, "comparison_query")
        if spec.get("url") is not None:
            clean["url"] = validate_url(spec, "url", require_str(spec, "url"))
        aggregate = spec.get("aggregate")
        if aggregate is not None:
            if aggregate not in AGGREGATES:
                raise InvalidInput(
                    f"must be one of {', '.join(AGGREGATES)}", field="spec.aggregate"
                )
            clean["aggregate"] = aggregate
        return clean

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Run the instant query (at ``ctx.until`` when set, else now), and
        the comparison query when the spec has one (each in half the time)."""
        spec = self.validate_spec(spec)
        if spec.get("comparison_query") is None:
            return self._instant(spec, spec["query"], ctx, timeout=timeout)
        measured = self._instant(spec, spec["query"], ctx, timeout=timeout / 2)
        other = self._instant(spec, spec["comparison_query"], ctx, timeout=timeout / 2)
        detail = {
            **measured.detail,
            "comparison_query": spec["comparison_query"],
            "comparison_value": other.value,
        }
        return Measurement(
            value=measured.value, samples=measured.samples, detail=detail
        )

    def _instant(
        self, spec: dict, query: str, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        from controlplane.conf import setting

        base = (spec.get("url") or setting("PROMETHEUS_URL")).rstrip("/")
        params = {"query": query, "timeout": f"{max(1, int(timeout * 1000))}ms"}
        if ctx.until is not None:
            params["time"] = f"{ctx.until.timestamp():.3f}"
        url = f"{base}/api/v1/query?{urlencode(params)}"
        result = http_request(
            url, timeout=timeout, headers={"Accept": "application/json"}
        )
        detail: dict = {
            "url": base,
            "query": query,
            "status": result.status,
            "latency_ms": round(result.latency_ms, 3),
        }
        try:
            payload = json.loads(result.body)
        except ValueError:
            raise ProviderError(
                f"Prometheus answered HTTP {result.status} with a body that is not JSON",
                detail=detail,
            ) from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else None
            error_type = payload.get("errorType") if isinstance(payload, dict) else None
            raise ProviderError(
                f"Prometheus query failed (HTTP {result.status}"
                f"{', ' + error_type if error_type else ''}): {error or 'bad response'}",
                detail={**detail, "error": error, "error_type": error_type},
            )
        data = payload.get("data") or {}
        result_type = data.get("resultType")
        raw = data.get("result")
        detail["result_type"] = result_type
        if result_type == "scalar":
            values = [_parse_sample(raw)]
            detail["raw"] = raw
        elif result_type == "vector" and isinstance(raw, list):
            detail["series"] = [
                {
                    "metric": item.get("metric", {}),
                    "value": (item.get("value") or [None, None])[1],
                }
                for item in raw[:20]
            ]
            detail["series_count"] = len(raw)
            values = [_parse_sample(item.get("value")) for item in raw]
        else:
            raise ProviderError(
                f"Prometheus answered a {result_type or 'malformed'} result;"
                " the query must return an instant vector or a scalar",
                detail=detail,
            )
        values = [value for value in values if not math.isnan(value)]
        if not values:
            return Measurement(value=None, samples=0, detail=detail)
        if len(values) > 1:
            aggregate = spec.get("aggregate")
            if aggregate is None:
                raise ProviderError(
                    f"the query returned {len(values)} series; aggregate them in"
                    " PromQL (e.g. sum(...)) or set spec.aggregate",
                    detail=detail,
                )
            detail["aggregate"] = aggregate
            value = float(AGGREGATES[aggregate](values))
        else:
            value = values[0]
        detail["value"] = value
        return Measurement(value=value, samples=len(values), detail=detail)
