"""Checkpoints stored in PostgreSQL."""
