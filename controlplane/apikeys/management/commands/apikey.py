"""manage.py apikey create|list|revoke."""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from controlplane.apikeys import services
from controlplane.apikeys.models import ApiKey, Scope
from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand


class Command(OutputCommand):
    help = "Create, list or revoke API keys (the raw key is printed once, on create)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("--name", required=True)
        create.add_argument("--scope", choices=Scope.values, default=Scope.SERVER)
        create.add_argument("--env", help="environment key (server keys)")
        create.add_argument("--user", help="service user (management keys)")
        create.add_argument("--actor", help="operator name for the audit log")
        sub.add_parser("list", help="list keys (prefix only)")
        revoke = sub.add_parser("revoke", help="revoke a key by id or prefix")
        revoke.add_argument("key", help="key id or its displayed prefix")
        revoke.add_argument("--actor", help="operator name for the audit log")

    def handle(self, *args, **options):
        try:
            return getattr(self, f"_{options['action']}")(options)
        except DomainError as exc:
            raise CommandError(exc.message) from None

    def _create(self, options) -> None:
        environment = user = None
        if options["env"]:
            # Looked up by label: controlplane imports nothing from the apps above it.
            environment_model = apps.get_model("flags", "Environment")
            environment = environment_model.objects.filter(key=options["env"]).first()
            if environment is None:
                raise CommandError(f"unknown environment {options['env']!r}")
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(
                    f"unknown user {options['user']!r}: name an existing user "
                    "(manage.py createsuperuser creates one; the demo's is 'admin')"
                )
        api_key, raw = services.apikey_create(
            actor=actor_for_cli(options.get("actor")),
            name=options["name"],
            scope=options["scope"],
            environment=environment,
            user=user,
        )
        self.stderr.write(
            f"created key #{api_key.pk} {api_key.name!r}; it is shown only once:"
        )
        self.stdout.write(raw)

    def _list(self, options) -> None:
        rows = []
        for api_key in ApiKey.objects.select_related("environment", "user"):
            where = (
                api_key.environment.key
                if api_key.environment_id
                else (api_key.user.get_username() if api_key.user_id else "-")
            )
            rows.append(
                (
                    api_key.pk,
                    f"{api_key.prefix}…",
                    api_key.scope,
                    where,
                    api_key.name,
                    "revoked" if api_key.revoked_at else "active",
                    api_key.last_used_at.isoformat()
                    if api_key.last_used_at
                    else "never",
                )
            )
        self.rows(
            None,
            ("id", "prefix", "scope", "environment/user", "name", "state", "last used"),
            rows,
            empty="no API keys: create one with 'manage.py apikey create'",
        )

    def _revoke(self, options) -> None:
        ref = options["key"]
        keys = (
            ApiKey.objects.filter(pk=int(ref))
            if ref.isdigit()
            else ApiKey.objects.filter(prefix__startswith=ref[:12])
            if len(ref) >= 8
            else ApiKey.objects.none()
        )
        keys = list(keys[:2])
        if not keys:
            raise CommandError(f"no API key {ref!r} (give its id or displayed prefix)")
        if len(keys) > 1:
            raise CommandError(f"{ref!r} matches several keys: give the id")
        services.apikey_revoke(
            actor=actor_for_cli(options.get("actor")), api_key=keys[0]
        )
        self.stdout.write(f"revoked key #{keys[0].pk} {keys[0].name!r}")
