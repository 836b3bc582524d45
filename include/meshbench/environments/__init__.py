"""Cluster providers: where the two clusters of a run come from (see registry.py)."""
