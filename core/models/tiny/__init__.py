"""Tiny random-weight models of the real classes, for tests and offline smoke runs."""
