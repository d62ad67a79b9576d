"""Benchmark the stale-flag usage count on the evaluation path.

Run: ``.venv/bin/python bench/usage_record.py`` (no database, no Django).

``flags.hotpath.usage.record`` runs once per evaluation request with that
request's answers. This reports its cost per evaluation for one answer per
request (the usual native request) and for 50 (an OFREP bulk request),
beside a bare dict assignment per answer (the floor any per-answer record
costs), each the fastest of several runs of 200,000 evaluations, timed in
this thread's CPU time (``time.thread_time_ns``: time spent waiting for a
busy machine's cores does not count; the fastest run is the least
disturbed by the other processes' cache use). The cost of the
benchmark's own loop and call is measured and subtracted. Target: under
100 ns per evaluation.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flags import engine  # noqa: E402
from flags.hotpath import usage  # noqa: E402

TARGET_NS = 100.0
EVALUATIONS = 200_000
RUNS = 25


def _answers(count: int) -> tuple[list[engine.Evaluation], dict[str, object]]:
    answers = [
        engine.Evaluation(
            flag_key=f"flag_{index}",
            value=True,
            variation="on",
            reason="STATIC",
            level="default",
            version=1,
        )
        for index in range(count)
    ]
    return answers, {answer.flag_key: object() for answer in answers}


def _fastest_ns(functions: list[Callable], answers: list, known: dict) -> list[float]:
    """Return each function's fastest ns per answer, runs interleaved."""
    requests = EVALUATIONS // len(answers)
    best = [float("inf")] * len(functions)
    for _ in range(RUNS):
        for index, function in enumerate(functions):
            started = time.thread_time_ns()
            for _ in range(requests):
                function("production", answers, known)
            elapsed = (time.thread_time_ns() - started) / EVALUATIONS
            best[index] = min(best[index], elapsed)
    return best


def _nothing(environment: str, answers: list, known: dict) -> None:
    return None


_floor_counts: dict[str, int] = {}


def _dict_set(environment: str, answers: list, known: dict) -> None:
    counts = _floor_counts
    for answer in answers:
        counts[answer.flag_key] = 1


def main() -> int:
    usage._counts["production"] = {}  # no flusher thread: nothing is written
    worst = 0.0
    for count in (1, 50):
        answers, known = _answers(count)
        overhead, total, bare = _fastest_ns(
            [_nothing, usage.record, _dict_set], answers, known
        )
        cost, floor = total - overhead, bare - overhead
        worst = max(worst, cost)
        print(
            f"{count:>2} answer(s) per request: usage.record {cost:5.1f} ns per "
            f"evaluation (a bare dict set: {floor:5.1f} ns; call overhead "
            f"{overhead:.1f} ns subtracted)"
        )
    verdict = "ok" if worst < TARGET_NS else "OVER TARGET"
    print(f"target < {TARGET_NS:.0f} ns per evaluation: {verdict}")
    return 0 if worst < TARGET_NS else 1


if __name__ == "__main__":
    sys.exit(main())
