"""WAL records, their encoding and the shard's single writer."""
