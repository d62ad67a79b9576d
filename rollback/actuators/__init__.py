"""Actuators, registered by kind. Each has plan, execute and verify."""

from __future__ import annotations

from rollback.actuators.base import Actuator, ActuatorError, StepContext
from rollback.actuators.deployment_revert import DeploymentRevertActuator
from rollback.actuators.flag_toggle import FlagToggleActuator
from rollback.actuators.migration_revert import MigrationRevertActuator

ACTUATORS: dict[str, Actuator] = {
    "flag_toggle": FlagToggleActuator(),
    "deployment_revert": DeploymentRevertActuator(),
    "migration_revert": MigrationRevertActuator(),
}

LEVEL_ACTUATORS: dict[int, str] = {
    1: "flag_toggle",
    2: "deployment_revert",
    3: "migration_revert",
}

__all__ = ["ACTUATORS", "LEVEL_ACTUATORS", "Actuator", "ActuatorError", "StepContext"]
