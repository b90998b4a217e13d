"""The embedded batch: `loyalty replay` (one process or --jobs N) and the simulator."""
