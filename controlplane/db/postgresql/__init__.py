"""PostgreSQL backend whose every wait on the server is bounded (see base.py)."""
