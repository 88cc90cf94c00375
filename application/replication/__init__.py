"""Replication rules the application enforces: the sync gate."""
