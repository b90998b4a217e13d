"""Client inputs: the contract of receipts, profiles and communication events."""
