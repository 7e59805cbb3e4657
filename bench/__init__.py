"""Benchmarks: `python -m bench` (make bench) runs every bench/*.py module that has a main()."""
