"""API pieces shared by every app: errors, permissions, pagination."""
