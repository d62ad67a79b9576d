"""The project's own settings: one namespaced dict with defaults.

Read values with ``setting("NAME")`` at call time, never at import time, so
tests can override ``settings.CONTROLPLANE``.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Ruleset refresh: how often a serving process polls ruleset versions.
    "RULESET_POLL_INTERVAL": 0.25,
    # A writer process sends at most one NOTIFY per environment set in this
    # many seconds, when the poll above delivers a skipped notice within a
    # second anyway (flags.propagation): bursts of changes cost one notice.
    "RULESET_NOTIFY_MIN_GAP": 0.1,
    # Serving: run the ruleset listener/poller and the API key revalidator in
    # a background thread of each serving process (off in the test settings).
    "RULESET_BACKGROUND": True,
    # Redis URL for ruleset change notices (pub/sub); empty = PostgreSQL
    # LISTEN/NOTIFY on PostgreSQL, polling only on SQLite.
    "RULESET_REDIS_URL": "",
    # Answers are marked stale when no version check succeeded for this long.
    "RULESET_STALE_AFTER": 2.0,
    # Ruleset stream (flags.stream): seconds between two heartbeats of an
    # open stream; a relay counts them as contact with its upstream, so keep
    # it under RULESET_STALE_AFTER.
    "STREAM_HEARTBEAT_SECONDS": 1.0,
    # Relays (flags.relay): conditional GET of the upstream ruleset this
    # often beside the stream, a verified client key re-checked upstream
    # after this long, outcome events sent upstream per batch of at most
    # this many.
    "RELAY_POLL_SECONDS": 5.0,
    "RELAY_KEY_RECHECK_SECONDS": 300.0,
    "RELAY_EVENTS_BATCH": 500,
    # API keys: revalidation period of cached keys (background), the TTL of a
    # cached key without the background thread, absent-key TTL, and the
    # minimum period between two last_used_at writes of one key.
    "APIKEY_REVALIDATE_INTERVAL": 0.5,
    "APIKEY_CACHE_TTL": 1.0,
    "APIKEY_NEGATIVE_TTL": 5.0,
    "APIKEY_TOUCH_INTERVAL": 60.0,
    # Evaluation API: largest accepted request body (bytes).
    "EVAL_MAX_BODY_BYTES": 65536,
    # Management API: most merchants one bulk upsert accepts.
    "MERCHANT_BULK_UPSERT_MAX": 1000,
    # Audit: how many history rows the CLI prints after an override change.
    "AUDIT_HISTORY_LIMIT": 10,
    # Demo data: the admin login printed by `manage.py demo`.
    "DEMO_ADMIN_USERNAME": "admin",
    "DEMO_ADMIN_PASSWORD": "admin",
    # Rollback (docs/rollback.md): deployment-revert backends, keyed by name;
    # a service uses the backend named like it, else "default".
    "ROLLBACK_DEPLOY_BACKENDS": {},
    "ROLLBACK_DEFAULT_COMMAND_TIMEOUT": 300,
    "ROLLBACK_DEFAULT_WEBHOOK_TIMEOUT": 30,
    "ROLLBACK_SIGNATURE_HEADER": "X-Controlplane-Signature",
    # argv run before a migration revert (e.g. pg_dump); None = no backup.
    "ROLLBACK_MIGRATION_BACKUP_COMMAND": None,
    "ROLLBACK_MIGRATION_BACKUP_TIMEOUT": 1800,
    "ROLLBACK_MIGRATION_DATABASES": ["default"],
    "ROLLBACK_STEP_MAX_ATTEMPTS": 3,
    "ROLLBACK_RETRY_BACKOFF_SECONDS": 5,
    "ROLLBACK_RETRY_BACKOFF_MAX_SECONDS": 300,
    # A step's lease ends this long after its last heartbeat (a command
    # backend renews it every ROLLBACK_STEP_HEARTBEAT_SECONDS) or, for work
    # that does not heartbeat, after its timeout; then the step is presumed
    # abandoned (its worker died): verified, then retried.
    "ROLLBACK_STEP_LEASE_GRACE_SECONDS": 10,
    "ROLLBACK_STEP_HEARTBEAT_SECONDS": 5,
    # The reaper re-queues a run with no live lease and no progress for this
    # long (a lost task); a run with an expired lease is re-queued at once.
    "ROLLBACK_RUN_STALE_SECONDS": 60,
    # Canary providers: the Prometheus a "prometheus" check queries when its
    # spec names no url; the most outcome events one POST /api/v1/events takes.
    "PROMETHEUS_URL": "http://127.0.0.1:9090",
    "OUTCOME_EVENTS_MAX_BATCH": 5000,
    # Bad input (issue 8): largest POST /api/v1/events body (bytes); a full
    # batch of OUTCOME_EVENTS_MAX_BATCH events is about 1.2 MB.
    "OUTCOME_EVENTS_MAX_BODY_BYTES": 2_621_440,
    # Canary cohort checks: fewest events per cohort (treatment and control)
    # before a comparison can pass or fail; fewer is inconclusive.
    "CANARY_COHORT_MIN_SAMPLES": {"error_rate": 50, "duration": 20},
    # Compare checks (docs/canary.md): the look-back before start whose
    # outcome events are each merchant's baseline (several times a phase's
    # length: the baselines' noise never shrinks during a phase), and the
    # statement timeout of capturing it.
    "CANARY_BASELINE_SECONDS": 21600,
    "CANARY_BASELINE_TIMEOUT": 20.0,
    # Releases (docs/releases.md): the two-sided alpha of the interaction
    # test between a failing member and the others (split over the pairs);
    # a significant interaction rolls the whole release back.
    "CANARY_RELEASE_INTERACTION_ALPHA": 0.01,
    # Canary controller: seconds between beat ticks (settings.py also reads
    # the CONTROLPLANE_CANARY_TICK_SECONDS environment variable for it).
    "CANARY_TICK_SECONDS": 2.0,
    # After a rollback (docs/canary.md, "After a rollback: verify and
    # escalate"): how long the compare checks keep measuring the formerly
    # treated merchants before the window ends; 0 = no verification.
    "CANARY_VERIFY_SECONDS": 1800,
    # Audit checkpoints (docs/audit.md): the JSON-lines file the chain's head
    # is appended to (None = <VAR_DIR>/audit-checkpoints.jsonl), and the
    # minutes between two beat checkpoints (settings.py also reads the
    # CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES environment variable for it).
    "AUDIT_CHECKPOINT_PATH": None,
    "AUDIT_CHECKPOINT_MINUTES": 15.0,
    # Outage: the Retry-After (seconds) of a 503 while the database is
    # unreachable, and where serving processes keep their last known good
    # rulesets and key hashes ("" = VAR_DIR/serving).
    "DATABASE_RETRY_AFTER": 5,
    "SERVING_STATE_DIR": "",
    # SQL health checks (docs/canary.md, "SQL checks"). The DATABASES aliases
    # a sql check may query; empty = SQL checks are refused. List a
    # dedicated read-only role's alias here, not "default": the control
    # plane's own tables hold sessions and key hashes.
    "CANARY_SQL_DATABASES": [],
    # Caps (seconds) on every SQL check query; a check's own timeout can
    # only be shorter. PostgreSQL: statement_timeout, lock_timeout and
    # idle_in_transaction_session_timeout of its read-only transaction;
    # SQLite: a progress-handler deadline and the busy timeout.
    "CANARY_SQL_STATEMENT_TIMEOUT": 5.0,
    "CANARY_SQL_LOCK_TIMEOUT": 1.0,
    "CANARY_SQL_IDLE_IN_TRANSACTION_TIMEOUT": 10.0,
    # The only functions a sql check's query may call (lower case, as
    # written; CAST, ::, CASE and operators are syntax, not calls).
    "CANARY_SQL_ALLOWED_FUNCTIONS": (
        # aggregates
        "count sum avg min max stddev stddev_pop stddev_samp variance var_pop"
        " var_samp bool_and bool_or every percentile_cont percentile_disc corr"
        " covar_pop covar_samp"
        # arithmetic
        " abs ceil ceiling floor round trunc sign sqrt cbrt power pow exp ln log"
        " log10 mod div greatest least"
        # conditionals and casts
        " coalesce nullif ifnull cast"
        # date and time
        " now current_timestamp current_date current_time localtimestamp"
        " localtime date_trunc date_part extract age make_interval to_timestamp"
        " date datetime julianday strftime unixepoch"
    ).split(),
}


def setting(name: str) -> Any:
    """Return the project setting ``name``, falling back to its default."""
    overrides = getattr(settings, "CONTROLPLANE", {}) or {}
    if name in overrides:
        return overrides[name]
    try:
        return DEFAULTS[name]
    except KeyError:
        raise KeyError(f"unknown CONTROLPLANE setting {name!r}") from None
