"""Checkpoints: a shard's state captured at a WAL seq."""
