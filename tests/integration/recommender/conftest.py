"""The recommender tests' fixtures: ``world`` and ``core`` (world.py), ``service`` (the process,
process.py)."""

from .process import service
from .world import core, world

__all__ = ["core", "service", "world"]
