"""The durable request log."""
