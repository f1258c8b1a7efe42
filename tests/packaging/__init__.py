"""Tests of the built and installed package, outside the checkout."""
