"""Recommender service: gRPC and FastAPI over one core (see README)."""
