"""Benchmarks (``make bench``): numbers and ratios against a peer measured in the same run."""
