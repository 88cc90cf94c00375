"""Use cases over the domain: the shard application, its WAL, checkpoints, recovery and the
replication rules it enforces."""
