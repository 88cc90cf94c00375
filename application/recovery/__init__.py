"""Recovery and replay: state rebuilt from the WAL."""
