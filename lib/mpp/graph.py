"""Deprecated path of the graph store: use ``mpp.stores.neo4j.Neo4jGraphStore``.

Kept only for ``mpp_recommender.core``, which another change is splitting at the same time;
remove once it imports ``mpp.stores.neo4j``.
"""

from mpp.stores.neo4j import Neo4jGraphStore as GraphStore

__all__ = ["GraphStore"]
