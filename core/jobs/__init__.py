"""The job engine: accepting, queueing, batching and answering jobs."""
