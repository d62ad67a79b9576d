"""Benchmark the pure evaluation engine against a hard lower bound.

Run: ``.venv/bin/python bench/engine.py`` (no database, no Django).

Every case evaluates 100,000 distinct merchant keys (the override-hit case
with 10 overrides cycles over those 10) and reports nanoseconds per
evaluation, the median of several runs. The lower bound is what any
percentage engine must do per key: one dict lookup (the override table) and
one mmh3 hash of the same ``"{flag}.{key}"`` string. Targets: every case
within 2x the lower bound; the 100,000-override ruleset within 1.2x of the
10-override one.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mmh3  # noqa: E402

from flags import engine  # noqa: E402

FLAG = "sequential_workflow"
RULE_FLAG = "enable_supplier_policy"
KEYS = 100_000
PERCENT_WEIGHT = 10_000  # 10% in thousandths of a percent
LOWER_BOUND_FACTOR = 2.0
OVERRIDE_SCALING_FACTOR = 1.2


def build_ruleset(overrides: int) -> engine.Ruleset:
    """Return a ruleset: a 10% rollout flag and a rule flag, ``overrides`` each."""
    override_rows = [
        {"merchant": f"pilot-{i}", "variation": "on"} for i in range(overrides)
    ]
    bool_variations = [{"key": "on", "value": True}, {"key": "off", "value": False}]
    split = {
        "split": [
            {"variation": "on", "weight": PERCENT_WEIGHT},
            {"variation": "off", "weight": engine.BUCKETS - PERCENT_WEIGHT},
        ]
    }
    return engine.compile_ruleset(
        {
            "environment": "production",
            "version": 7,
            "flags": [
                {
                    "key": FLAG,
                    "value_type": "bool",
                    "variations": bool_variations,
                    "enabled": True,
                    "off_variation": "off",
                    "rules": [],
                    "fallthrough": split,
                    "bucket_by": "merchant",
                    "overrides": override_rows,
                },
                {
                    "key": RULE_FLAG,
                    "value_type": "bool",
                    "variations": bool_variations,
                    "enabled": True,
                    "off_variation": "off",
                    "rules": [
                        {
                            "clauses": [
                                {"attribute": "tier", "op": "in", "values": ["gold"]}
                            ],
                            "serve": {"variation": "on"},
                        }
                    ],
                    "fallthrough": {"variation": "off"},
                    "bucket_by": "merchant",
                    "overrides": override_rows,
                },
            ],
            "segments": {},
            "merchants": {},
        }
    )


def rollout_keys(want_hit: bool, count: int) -> list[str]:
    """Return ``count`` distinct merchant keys inside (or outside) the 10%."""
    keys: list[str] = []
    n = 0
    while len(keys) < count:
        key = f"m-{n:07d}"
        n += 1
        if (engine.bucket(FLAG, key) < PERCENT_WEIGHT) == want_hit:
            keys.append(key)
    return keys


def measure(
    cases: dict[str, Callable[[], None]], per: int, runs: int
) -> dict[str, float]:
    """Return the median nanoseconds per item of each case over ``runs`` rounds.

    Rounds interleave the cases, so a burst of load on a shared machine hits
    every case alike instead of skewing the one that happened to be running.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run()  # warm up
    for _ in range(runs):
        for name, run in cases.items():
            gc.disable()
            start = time.thread_time_ns()
            run()
            elapsed = time.thread_time_ns() - start
            gc.enable()
            samples[name].append(elapsed / per)
    return {name: statistics.median(values) for name, values in samples.items()}


def evaluate_case(
    ruleset: engine.Ruleset, flag: str, contexts: list[dict], expect: tuple[str, str]
) -> Callable[[], None]:
    """Check the answer for every context; return a loop evaluating them all."""
    evaluate = engine.evaluate
    for context in contexts:
        answer = evaluate(ruleset, flag, context)
        if (answer.reason, answer.level) != expect:
            raise SystemExit(f"bench setup is wrong: {context} -> {answer}")

    def run() -> None:
        for context in contexts:
            evaluate(ruleset, flag, context)

    return run


def lower_bound(contexts: list[dict], table: dict) -> Callable[[], None]:
    """Return a loop doing, per request, one lookup in ``table`` and one mmh3 hash.

    The key is read from the same request dicts the engine gets, so both
    loops pay the same memory traffic for their input.
    """
    get = table.get
    hash_ = mmh3.hash
    prefix = f"{FLAG}."

    def run() -> None:
        for context in contexts:
            key = context["merchant"]
            get(key)
            hash_(prefix + key, 0, False)

    return run


def strict_lower_bound(keys: list[str], table: dict) -> Callable[[], None]:
    """Return the same loop over a bare list of key strings (no request dicts)."""
    get = table.get
    hash_ = mmh3.hash
    prefix = f"{FLAG}."

    def run() -> None:
        for key in keys:
            get(key)
            hash_(prefix + key, 0, False)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=7, help="timed runs per case (median)"
    )
    args = parser.parse_args()
    runs = max(5, args.runs)

    hits = rollout_keys(True, KEYS)
    misses = rollout_keys(False, KEYS)
    rulesets = {n: build_ruleset(n) for n in (10, 100_000)}

    cases: dict[str, Callable[[], None]] = {}
    for n, ruleset in rulesets.items():
        pilots = [f"pilot-{i % n}" for i in range(KEYS)]
        cases[f"override hit/{n}"] = evaluate_case(
            ruleset,
            FLAG,
            [{"merchant": key} for key in pilots],
            ("TARGETING_MATCH", "override"),
        )
        cases[f"10% rollout miss/{n}"] = evaluate_case(
            ruleset, FLAG, [{"merchant": key} for key in misses], ("SPLIT", "default")
        )
        cases[f"10% rollout hit/{n}"] = evaluate_case(
            ruleset, FLAG, [{"merchant": key} for key in hits], ("SPLIT", "default")
        )
        cases[f"rule match/{n}"] = evaluate_case(
            ruleset,
            RULE_FLAG,
            [{"merchant": key, "tier": "gold"} for key in misses],
            ("TARGETING_MATCH", "rule:1"),
        )
    miss_contexts = [{"merchant": key} for key in misses]
    for n in rulesets:
        table = {f"pilot-{i}": i for i in range(n)}
        cases[f"bound/{n}"] = lower_bound(miss_contexts, table)
        cases[f"strict bound/{n}"] = strict_lower_bound(misses, table)
    medians = measure(cases, KEYS, runs)
    bounds = {n: medians.pop(f"bound/{n}") for n in rulesets}
    strict = {n: medians.pop(f"strict bound/{n}") for n in rulesets}
    results = {
        (name.split("/")[0], int(name.split("/")[1])): ns
        for name, ns in medians.items()
    }

    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores; {KEYS:,} distinct keys per case; "
        f"median of {runs} interleaved runs; thread CPU time"
    )
    for n in rulesets:
        print(
            f"lower bound, {n:>7,}-entry table: {bounds[n]:7.1f} ns "
            f"(request dict read + dict lookup + mmh3 of '{{flag}}.{{key}}'); "
            f"bare key list: {strict[n]:7.1f} ns"
        )
    print(
        f"the hardware alone: a 100,000-entry table costs "
        f"{bounds[100_000] / bounds[10]:.2f}x the 10-entry one in the lower bound"
    )
    print(
        f"{'case':<18} {'overrides':>9} {'ns/eval':>9} {'x bound':>8} {'x strict':>8} "
        f"{'x 10-ov':>8}  result"
    )
    failed = False
    for (case, n), ns in results.items():
        to_bound = ns / bounds[n]
        to_strict = ns / strict[n]
        to_small = ns / results[(case, 10)]
        ok = to_bound <= LOWER_BOUND_FACTOR and (
            n == 10 or to_small <= OVERRIDE_SCALING_FACTOR
        )
        failed |= not ok
        print(
            f"{case:<18} {n:>9,} {ns:9.1f} {to_bound:8.2f} {to_strict:8.2f} {to_small:8.2f}  "
            f"{'PASS' if ok else 'MISS'}"
        )
    print(
        f"targets: <= {LOWER_BOUND_FACTOR}x the bound with the same table size; "
        f"100,000 overrides <= {OVERRIDE_SCALING_FACTOR}x the 10-override case "
        f"-> {'MISS' if failed else 'PASS'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
