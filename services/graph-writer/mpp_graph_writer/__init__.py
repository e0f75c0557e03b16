"""The graph-writer service."""
