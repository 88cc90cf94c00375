"""The shard application: one writer's state, commands and recovery."""
