"""The embedder service: conversations.validated -> conversations.enriched (see service.py)."""
