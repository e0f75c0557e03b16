"""The stores layer: one module per backend, each behind one interface.

- ``mpp.stores.clients``: the plain clients of each store's library, built from the settings
  (re-exported here: ``from mpp.stores import postgres_connect``).
- ``mpp.stores.base``: the interfaces and their contracts (``VectorStore``, ``GraphStore``).
- ``mpp.stores.milvus``: ``MilvusVectorStore``, every read and write of message and campaign
  vectors (rows in ``vector_rows``, collections in ``milvus_schema``).
- ``mpp.stores.neo4j``: ``Neo4jGraphStore``, every read and write of the graph (rows in
  ``graph_rows``, statements in ``cypher``).

Stores sit below the services: nothing here imports ``mpp.writers``, ``mpp.service`` or a
service package. Importing this package needs neither pymilvus nor the model: the Milvus
modules are imported only by those who name them.
"""

from mpp.stores.clients import milvus_client, neo4j_driver, postgres_connect, redis_client

__all__ = ["milvus_client", "neo4j_driver", "postgres_connect", "redis_client"]
