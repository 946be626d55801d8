"""Chat probes: echo latency over WebSocket (generic JSON or text protocols)."""
