"""Scale benchmark (issue 10, items 5 and 6): a million merchants.

Builds (once; reused while the sizes match) a PostgreSQL database with
1,000,000 merchants, 1,000 flags in one environment with 100,000 merchant
overrides spread over them, and 20,000,000 outcome events over 30 days
(bench/_scale_data.py: COPY, synchronous_commit off). Then prints:

- snapshot build: time to load and compile the environment's ruleset, and
  the memory it holds (RSS delta and tracemalloc peak/current);
- single change: time for the service + the store to apply one flag change
  (state, override add and remove, kill), and the time until a second
  process (its own store, listening) answers it;
- ``merchants suggest-pilot``: time of the suggestion on the flag with
  events (and on the environment basis);
- list pages: query counts and times of the admin changelists and the API
  lists at that scale;
- write throughput (item 6) from ``bench._scale_writes`` when present.

    .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --merchants 100000 --events 1000000  # smaller
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_SCALE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cp_scale"
        ),
    )
    parser.add_argument("--merchants", type=int, default=1_000_000)
    parser.add_argument("--flags", type=int, default=1_000)
    parser.add_argument("--overrides", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--changes", type=int, default=20, help="per change kind")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: snapshot,change,pilot,lists,writes",
    )
    parser.add_argument(
        "--writes-args",
        default="",
        help="arguments for bench/_scale_writes.py (item 6), e.g. '--writers 8'",
    )
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL")
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    # the suggestion reads a month of events: room beyond the serving limits
    os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT", "120")
    os.environ.setdefault("DATABASE_READ_TIMEOUT", "180")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")

    from bench import _scale_data

    sizes = _scale_data.Sizes(
        merchants=args.merchants,
        flags=args.flags,
        overrides=args.overrides,
        events=args.events,
        days=args.days,
    )
    print(
        f"scale: {sizes.merchants:,} merchants, {sizes.flags:,} flags,"
        f" {sizes.overrides:,} overrides, {sizes.events:,} outcome events over"
        f" {sizes.days} days (PostgreSQL {args.database_url.rsplit('/', 1)[-1]})"
    )
    if not _scale_data.ensure(args.database_url, sizes):
        print("  data reused (same sizes)")

    from bench import _scale_measure

    if "snapshot" not in skip:
        _scale_measure.snapshot_build()
    if "change" not in skip:
        _scale_measure.single_changes(args.database_url, args.changes)
    if "pilot" not in skip:
        _scale_measure.suggest_pilot()
    if "lists" not in skip:
        _scale_measure.list_pages()
    if "writes" not in skip:
        _scale_measure.write_throughput(shlex.split(args.writes_args))


if __name__ == "__main__":
    main()
