"""The vector-writer service."""
