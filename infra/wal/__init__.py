"""The WAL's PostgreSQL store."""
