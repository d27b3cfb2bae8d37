"""Operating a Sonify process: its Prometheus metrics and its readiness.

Each process (`sonify run`, `sonify worker`) builds one `Operations` at start-up
(`wiring`): one metrics registry (`metrics`), values read from the parts that keep them
when it is scraped (`sources`), and the checks that say whether it can do its work
(`health`). The HTTP side (/metrics, /livez, /readyz) is in bot/ops.
"""
