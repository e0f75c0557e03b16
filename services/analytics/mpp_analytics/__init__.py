"""Analytics service: engagement, campaign performance and daily activity (see README)."""
