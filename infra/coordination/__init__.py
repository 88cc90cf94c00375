"""Coordination through ZooKeeper: leadership, locks, epochs."""
