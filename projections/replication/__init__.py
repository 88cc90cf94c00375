"""Replication over the broker: the leader's relay and the standby's replicator."""
