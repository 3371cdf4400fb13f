"""Helpers for tests and benchmarks only (box matching, labelled synthetic cells, a linear probe).

Kept under tests/, outside the `leuk_edge` package, so the wheel (the runtime) carries no test helpers and no
scikit-learn import. Tests import it as `support` (tests/ is on sys.path); benchmarks add tests/ to sys.path.
"""
