from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "controlplane.notifications"
    label = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.audit.signals import audit_recorded
        from controlplane.notifications.dispatch import on_audit_recorded

        audit_recorded.connect(on_audit_recorded, dispatch_uid="notifications")
