"""The node daemon: a region's process with its shards, agents and API."""
