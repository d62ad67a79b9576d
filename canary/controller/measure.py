"""Step 2 of a tick, the measurement, with no transaction open.

Network providers (http, prometheus) run in a thread pool, each bounded by
the check's timeout; database providers (``IN_THREAD_PROVIDERS``) run in
the ticking thread, bounded by their own statement timeout. ``measure``
never raises: a failure is a ``MeasureResult`` with an ``error``.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from canary import clock
from canary.controller.claim import MeasureJob
from canary.providers import Measurement, ProviderError, get_provider
from controlplane.exceptions import DomainError

# Providers that query Django databases: they run in the ticking thread (a
# thread of their own would need its own connection) and are bounded by
# their statement timeout.
IN_THREAD_PROVIDERS = frozenset({"sql", "outcomes"})
# Added to a check's timeout for the pool's wait.
POOL_WAIT_GRACE_SECONDS = 0.5
MAX_POOL_WORKERS = 8


@dataclass
class MeasureResult:
    job: MeasureJob
    measurement: Measurement | None
    error: str | None
    measured_at: dt.datetime


def _measure_one(job: MeasureJob) -> Measurement:
    return get_provider(job.provider).measure(
        job.spec, job.context, timeout=job.timeout
    )


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.message
    if isinstance(exc, DomainError):
        return f"invalid check: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def measure(jobs: list[MeasureJob]) -> list[MeasureResult]:
    """Measure every job; never raises (a failure is an ``error`` result)."""
    if not jobs:
        return []
    results: list[MeasureResult] = []
    pooled = [job for job in jobs if job.provider not in IN_THREAD_PROVIDERS]
    futures: list[tuple[MeasureJob, Future, float]] = []
    pool: ThreadPoolExecutor | None = None
    if pooled:
        pool = ThreadPoolExecutor(
            max_workers=min(MAX_POOL_WORKERS, len(pooled)),
            thread_name_prefix="canary-check",
        )
        for job in pooled:
            futures.append(
                (job, pool.submit(_measure_one, job), time.monotonic() + job.timeout)
            )
    try:
        # Database providers run here while the network ones are in flight.
        for job in jobs:
            if job.provider not in IN_THREAD_PROVIDERS:
                continue
            try:
                results.append(MeasureResult(job, _measure_one(job), None, clock.now()))
            except Exception as exc:
                results.append(MeasureResult(job, None, _error_text(exc), clock.now()))
        for job, future, deadline in futures:
            wait = max(0.0, deadline - time.monotonic()) + POOL_WAIT_GRACE_SECONDS
            try:
                measurement = future.result(timeout=wait)
                results.append(MeasureResult(job, measurement, None, clock.now()))
            except FutureTimeout:
                results.append(
                    MeasureResult(
                        job,
                        None,
                        f"timed out after {job.timeout:g}s (controller bound)",
                        clock.now(),
                    )
                )
            except Exception as exc:
                results.append(MeasureResult(job, None, _error_text(exc), clock.now()))
    finally:
        if pool is not None:
            # A provider stuck past its timeout is abandoned, not waited for.
            pool.shutdown(wait=False, cancel_futures=True)
    return results
