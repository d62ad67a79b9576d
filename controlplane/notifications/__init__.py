"""Notifications: rollout and kill-switch events sent to configured destinations."""
