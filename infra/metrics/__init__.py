"""Metrics and alerts of replication and failover."""
