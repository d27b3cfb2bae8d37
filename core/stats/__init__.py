"""Usage statistics from the request log."""
