"""Admin for rollouts (a package: forms, the button actions, the model admins): phases, checks and latest check runs on one page,
buttons for start / approve / pause / resume / abort / fail phase / roll
back now (each with a confirmation page), and the explanation of every
automatic decision.

Nothing here assigns a field: the buttons and the add page call
``canary.services`` with ``actor_for_user(request.user)``, so every change
has its audit event. Rows are read-only in the admin.
"""

from canary.admin import (  # noqa: F401  (registers the admins)
    check_run_admin,
    check_template_admin,
    pipeline_admin,
    release_admin,
    rollout_admin,
)
