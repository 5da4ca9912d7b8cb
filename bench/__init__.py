"""Benchmarks of MIMIMI's network, feature path and scoring: ``python -m bench.run`` (``make bench``)."""
