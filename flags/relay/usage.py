"""A relay's flag usage goes upstream: it has no database of its own.

``UsageForwarder`` is the relay's usage sink (``flags.hotpath.usage``):
each flush posts ``{"counts": {flag: n}}`` per environment to the
upstream's ``POST /api/v1/usage`` with the relay's server key. A failed
post raises, so the counts stay pending and go with the next flush.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any


class UsageForwarder:
    """Send flushed evaluation counts to the upstream control plane."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def __call__(self, counts: dict[tuple[str, str], int], at: Any) -> None:
        by_environment: dict[str, dict[str, int]] = {}
        for (environment, flag), count in counts.items():
            by_environment.setdefault(environment, {})[flag] = count
        for flags in by_environment.values():
            # the key belongs to the relay's one environment: the upstream
            # files the counts under it
            request = urllib.request.Request(
                f"{self.base_url}/api/v1/usage",
                data=json.dumps({"counts": flags}).encode(),
                headers={
                    "Authorization": f"Bearer {self.key}",
                    "Content-Type": "application/json",
                },
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
