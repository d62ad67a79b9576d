from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console's shared look: stylesheet, confirmations, time tags."""

    name = "controlplane.console"
    label = "console"
    verbose_name = "Operator console"
