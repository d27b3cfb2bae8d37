"""Image intake: links, SSRF-safe fetching, hardened decoding."""
