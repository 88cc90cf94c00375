"""The exchange-dr command line."""
