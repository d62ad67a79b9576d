"""Pending changes: four-eyes change requests and scheduled changes.

Both hold an *operation* (a flag state change, a kill or restore, an
override, a rollout start) with its arguments and the flag state it was
based on, applied later by the existing services (``operations.py``).
"""
