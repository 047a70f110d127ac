"""Command-line flows: thin wrappers around :mod:`pipeline`."""
