"""The POS lookup server: a small HTTP server answering a client's segments from Redis."""
