"""The redis backend: adapters and `sonify worker` processes sharing one request log."""
