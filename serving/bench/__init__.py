"""Benchmarks behind `python -m serving bench ...`: plain functions that time real code paths and return numbers."""
