"""Failover: the controller that decides which region leads a shard."""
