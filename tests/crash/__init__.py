"""Crash tests: a real SIGKILL to a real `kucero node --once` during renewal."""
