"""exchange-dr: pure domain model; no I/O, no clock, no randomness."""
