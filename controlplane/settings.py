"""Settings, read from environment variables.

Zero-setup defaults: SQLite in ``var/``, tasks run in process, DEBUG on.
Production sets ``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL``,
``SECRET_KEY``, ``DEBUG=false`` and ``ALLOWED_HOSTS``.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONTROLPLANE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [
        item.strip()
        for item in os.environ.get(name, default).split(",")
        if item.strip()
    ]


DEBUG = _env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY") or (
    "dev-only-insecure-key-set-SECRET_KEY-in-production" if DEBUG else ""
)
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI and Redoc served from this server's static files: the API
    # docs work without internet access (no CDN).
    "drf_spectacular_sidecar",
    # The operator console's look: stylesheet, confirmations, time tags
    # (admin/base_site.html, in controlplane/templates, links them).
    "controlplane.console",
    "controlplane.audit",
    "controlplane.apikeys",
    # Rollout and kill-switch notifications (docs/notifications.md)
    "controlplane.notifications",
    # Four-eyes change requests and scheduled changes (docs/changes.md)
    "flags.changes",
    "flags",
    "rollback",
    "canary",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "controlplane.audit.middleware.RequestIdMiddleware",
    # Refuses NUL and undecodable query text and undecoded chunked bodies.
    "controlplane.middleware.UntrustedRequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # A view's database failure answers 503 with Retry-After (HTML for the
    # admin, JSON under /api/), not 500.
    "controlplane.unavailable.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "controlplane" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL")
        or f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite: wait for the writer instead of failing with "database is locked",
    # and start write transactions IMMEDIATE so audit-chain appends serialize.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )

# Outage hardening: no wait on PostgreSQL is unbounded, so a hung or
# unreachable database becomes an error (503) instead of a blocked worker.
# Every process gets these; `manage.py migrate` and the migration revert lift
# the statement and read timeouts for their own session
# (controlplane.db.timeouts_lifted). Seconds; 0 = no limit.


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        raise RuntimeError(f"{name} must be a number of seconds") from None
    if value < 0:
        raise RuntimeError(f"{name} must be a number of seconds")
    return value


if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _statement_timeout = _env_seconds("DATABASE_STATEMENT_TIMEOUT", 15)
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["ENGINE"] = "controlplane.db.postgresql"
    _db_options.setdefault(
        "connect_timeout", max(1, round(_env_seconds("DATABASE_CONNECT_TIMEOUT", 3)))
    )
    _db_options["options"] = (
        f"{_db_options.get('options', '')} "
        f"-c statement_timeout={int(_statement_timeout * 1000)}"
    ).strip()
    # client side: a server that stops answering on an open connection (no
    # RST) is given up on after this; above the statement timeout so a slow
    # live query still ends with the server's own error
    _db_options.setdefault(
        "read_timeout",
        _env_seconds(
            "DATABASE_READ_TIMEOUT", _statement_timeout + 5 if _statement_timeout else 0
        ),
    )
    # TCP keepalives find a dead peer of an idle persistent connection
    _db_options.setdefault("keepalives", 1)
    _db_options.setdefault("keepalives_idle", 10)
    _db_options.setdefault("keepalives_interval", 5)
    _db_options.setdefault("keepalives_count", 3)
# controlplane itself is an app for its `migrate` (timeouts lifted) command
INSTALLED_APPS.append("controlplane")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Celery: no broker configured means tasks run in process (zero-setup).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {
    "flags-purge-expired-overrides": {
        "task": "flags.tasks.overrides_purge_expired_task",
        "schedule": 60.0,
    },
    # Re-queue rollback runs whose worker died (claims make it safe). Every
    # 5 s: with a 15 s lease a dead worker's step is retried within 30 s.
    "rollback-resume-stuck-runs": {
        "task": "rollback.tasks.rollback_runs_resume_task",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.apikeys.authentication.ManagementKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "controlplane.api.exception_handler.api_exception_handler",
}

# Untrusted input (issue 8): the management API parses JSON only, checked by
# controlplane.api.input (other content types: 415); query strings and chunked
# bodies are checked before any view (controlplane/middleware.py).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "controlplane.api.parsers.UntrustedJSONParser"
]

SPECTACULAR_SETTINGS = {
    "TITLE": "Feature-flag and canary control plane API",
    "DESCRIPTION": "Flags, evaluation (native and OFREP), rollouts and rollbacks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "flags.api.eval_schema.add_evaluation_paths",
    ],
    # Several models have a "status" field: name each choice set once.
    "ENUM_NAME_OVERRIDES": {
        "RolloutStatusEnum": "canary.models.RolloutStatus",
        "CheckStatusEnum": "canary.models.CheckStatus",
        "DeploymentStatusEnum": "rollback.models.DeploymentStatus",
        "RollbackRunStatusEnum": "rollback.models.RunStatus",
        "RollbackStepStatusEnum": "rollback.models.StepStatus",
        "PipelineStatusEnum": "canary.pipeline_models.PipelineStatus",
    },
}

# Logs go to standard error, never standard output: a command's output is
# its own (the project's commands also raise the level to WARNING unless -v 2,
# controlplane/management/commands/_output.py). LOG_LEVEL sets the level of
# servers and workers, and wins over a command's verbosity when set.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Project settings: one namespaced dict, read through controlplane.conf.setting().
# Deployment and migration commands live here and only here: never in the
# admin or the API.
CONTROLPLANE: dict = {}

# Canary controller: beat ticks every CANARY_TICK_SECONDS (environment variable
# CONTROLPLANE_CANARY_TICK_SECONDS, default 2); a tick not started within one
# interval expires, so a busy worker never works through a backlog of ticks.
if os.environ.get("CONTROLPLANE_CANARY_TICK_SECONDS"):
    try:
        CONTROLPLANE["CANARY_TICK_SECONDS"] = float(
            os.environ["CONTROLPLANE_CANARY_TICK_SECONDS"]
        )
    except ValueError:
        raise RuntimeError(
            "CONTROLPLANE_CANARY_TICK_SECONDS must be a number of seconds"
        ) from None
_CANARY_TICK_SECONDS = float(CONTROLPLANE.get("CANARY_TICK_SECONDS", 2.0))
CELERY_BEAT_SCHEDULE["canary-controller-tick"] = {
    "task": "canary.tasks.controller_tick_task",
    "schedule": _CANARY_TICK_SECONDS,
    "options": {"expires": max(1.0, _CANARY_TICK_SECONDS)},
}

# Audit checkpoints: beat appends the audit chain's head to the checkpoint file
# every AUDIT_CHECKPOINT_MINUTES (environment variables
# CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES, default 15, and
# CONTROLPLANE_AUDIT_CHECKPOINT_PATH for the file).
if os.environ.get("CONTROLPLANE_AUDIT_CHECKPOINT_PATH"):
    CONTROLPLANE["AUDIT_CHECKPOINT_PATH"] = os.environ[
        "CONTROLPLANE_AUDIT_CHECKPOINT_PATH"
    ]
if os.environ.get("CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES"):
    try:
        CONTROLPLANE["AUDIT_CHECKPOINT_MINUTES"] = float(
            os.environ["CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES"]
        )
    except ValueError:
        CONTROLPLANE["AUDIT_CHECKPOINT_MINUTES"] = 0.0  # refused just below
    if not 0 < CONTROLPLANE["AUDIT_CHECKPOINT_MINUTES"] < float("inf"):
        raise RuntimeError(
            "CONTROLPLANE_AUDIT_CHECKPOINT_MINUTES must be a positive number of minutes"
        )
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "controlplane.audit.tasks.audit_checkpoint_task",
    "schedule": 60.0 * float(CONTROLPLANE.get("AUDIT_CHECKPOINT_MINUTES", 15.0)),
}
# SQL health checks (docs/canary.md, "SQL checks"): CANARY_SQL_DATABASE_URL,
# the URL of a read-only role, adds the DATABASES alias "canary_sql" and makes
# it the one alias sql checks may query. Without it SQL checks are refused.
if os.environ.get("CANARY_SQL_DATABASE_URL"):
    DATABASES["canary_sql"] = dj_database_url.parse(
        os.environ["CANARY_SQL_DATABASE_URL"], conn_max_age=0
    )
    if DATABASES["canary_sql"]["ENGINE"].endswith("postgresql"):
        # A check must not hang on an unreachable server either.
        DATABASES["canary_sql"].setdefault("OPTIONS", {}).setdefault(
            "connect_timeout", 5
        )
    CONTROLPLANE["CANARY_SQL_DATABASES"] = ["canary_sql"]
# Notifications (docs/notifications.md): lost delivery tasks are re-queued.
CELERY_BEAT_SCHEDULE["notifications-resume-stale"] = {
    "task": "controlplane.notifications.tasks.notifications_resume_stale_task",
    "schedule": 60.0,
}
# Scheduled changes (docs/changes.md): due changes are applied within about a
# second of their time; a tick not started within its second expires.
CELERY_BEAT_SCHEDULE["changes-scheduled-tick"] = {
    "task": "flags.changes.tasks.scheduled_changes_tick_task",
    "schedule": 1.0,
    "options": {"expires": 1.0},
}
# CONTROLPLANE_SITE_URL, the address operators open
# (https://cp.example.com), puts admin links in messages.
if os.environ.get("CONTROLPLANE_SITE_URL"):
    CONTROLPLANE["SITE_URL"] = os.environ["CONTROLPLANE_SITE_URL"]
