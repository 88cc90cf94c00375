"""Drills: two regions as real processes, load, failure, and a checker of what survived."""
