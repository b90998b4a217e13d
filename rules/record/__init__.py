"""The per-client record: purchases (state) and communications (comm)."""
