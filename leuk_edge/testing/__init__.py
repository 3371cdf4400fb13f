"""Helpers for tests and benchmarks only (box matching, labelled synthetic cells, a linear probe).

The runtime never imports this package."""
