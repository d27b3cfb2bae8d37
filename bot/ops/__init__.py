"""The operator's HTTP routes: /metrics (Prometheus), /livez and /readyz.

`routes` adds them to an aiohttp app (the web page's, under its rules: token, CSP, JSON
errors); `server` serves them alone on an address of their own (`[metrics] listen`,
`sonify worker --metrics-port`). What they report is core/ops.
"""
