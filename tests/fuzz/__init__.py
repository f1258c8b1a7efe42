"""Property-based tests: generated documents never end in an unhandled exception."""
