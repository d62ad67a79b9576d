"""Health-check providers, registered by name.

Each provider implements ``canary.providers.base.Provider``:
``validate_spec(spec) -> dict`` and ``measure(spec, ctx, *, timeout) ->
Measurement`` (raising ``ProviderError``).
"""

from __future__ import annotations

from canary.providers.base import MeasureContext, Measurement, Provider, ProviderError
from canary.providers.http import HttpProvider
from canary.providers.outcomes import OutcomesProvider
from canary.providers.prometheus import PrometheusProvider
from canary.providers.sql import SqlProvider
from controlplane.exceptions import InvalidInput

PROVIDERS: dict[str, Provider] = {
    "prometheus": PrometheusProvider(),
    "http": HttpProvider(),
    "sql": SqlProvider(),
    "outcomes": OutcomesProvider(),
}


def get_provider(name: str) -> Provider:
    """Return the provider registered as ``name``; raise ``InvalidInput``."""
    try:
        return PROVIDERS[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown provider {name!r} (known: {', '.join(PROVIDERS)})",
            field="provider",
        ) from None


__all__ = [
    "PROVIDERS",
    "MeasureContext",
    "Measurement",
    "Provider",
    "ProviderError",
    "get_provider",
]
