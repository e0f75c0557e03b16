"""The two Milvus collections' schemas: creating them, and checking one that exists.

Index: FLAT (exact). Measured on Milvus Lite 2.5.1 with 384-dim MiniLM embeddings of real chat
messages, IVF_FLAT was no faster up to 40k rows and at 100k rows returned only 81% of the true
top 10 whatever nprobe was (FLAT: 13.6 ms p50 per search, exact). A full Milvus in production
can use IVF_FLAT or HNSW (``MPP_MILVUS__INDEX_TYPE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from mpp.config import MilvusSettings
from mpp.logs import get_logger
from mpp.stores.base import MAX_ID_CHARS
from mpp.stores.milvus_errors import DimensionMismatchError, SchemaMismatchError
from mpp.stores.vector_rows import MAX_NAME_CHARS, MAX_SHORT_CHARS

log = get_logger(__name__)

VECTOR_FIELD = "embedding"


@dataclass(frozen=True)
class Collection:
    name: str
    # Scalar fields other than the primary key: name -> (type, max_length or None).
    scalars: dict[str, tuple[DataType, int | None]] = field(default_factory=dict)
    primary: str = ""
    # The setting that names the collection, for the errors' fixes.
    setting: str = ""


MESSAGE_SCALARS: dict[str, tuple[DataType, int | None]] = {
    "user_id": (DataType.VARCHAR, MAX_ID_CHARS),
    "ts": (DataType.INT64, None),
    "channel": (DataType.VARCHAR, MAX_SHORT_CHARS),
    "locale": (DataType.VARCHAR, MAX_SHORT_CHARS),
    "campaign_id": (DataType.VARCHAR, MAX_ID_CHARS),
    "top_intent": (DataType.VARCHAR, MAX_NAME_CHARS),
    "top_intent_score": (DataType.FLOAT, None),
    "model": (DataType.VARCHAR, MAX_NAME_CHARS),
}
CAMPAIGN_SCALARS: dict[str, tuple[DataType, int | None]] = {
    "active": (DataType.BOOL, None),
    "starts_at": (DataType.INT64, None),
    "ends_at": (DataType.INT64, None),
    "model": (DataType.VARCHAR, MAX_NAME_CHARS),
}


def collections(cfg: MilvusSettings) -> tuple[Collection, Collection]:
    """The messages and the campaigns collections that ``cfg`` names."""
    return (
        Collection(
            cfg.messages_collection,
            MESSAGE_SCALARS,
            "message_id",
            "MPP_MILVUS__MESSAGES_COLLECTION",
        ),
        Collection(
            cfg.campaigns_collection,
            CAMPAIGN_SCALARS,
            "campaign_id",
            "MPP_MILVUS__CAMPAIGNS_COLLECTION",
        ),
    )


def index_args(cfg: MilvusSettings) -> dict[str, Any]:
    kind = cfg.index_type
    if kind == "IVF_FLAT":
        return {"index_type": kind, "params": {"nlist": cfg.ivf_nlist}}
    if kind == "HNSW":
        return {"index_type": kind, "params": {"M": 16, "efConstruction": 200}}
    return {"index_type": "FLAT"}


def vector_dimension(described: dict[str, Any]) -> int:
    """The vector field's dimension in ``describe_collection``'s answer, 0 when none."""
    for described_field in described.get("fields", []):
        if described_field.get("name") == VECTOR_FIELD:
            return int(described_field.get("params", {}).get("dim", 0))
    return 0


def ensure(client: MilvusClient, collection: Collection, dim: int, cfg: MilvusSettings) -> None:
    """Create ``collection`` with its COSINE index when missing, check it when it exists, and
    load it; idempotent."""
    timeout = cfg.timeout_s
    if client.has_collection(collection.name, timeout=timeout):
        check_existing(client, collection, dim, timeout)
    else:
        create(client, collection, dim, cfg)
    state = client.get_load_state(collection.name, timeout=timeout)
    if str(state.get("state")) != "Loaded":
        client.load_collection(collection.name, timeout=timeout)


def create(client: MilvusClient, collection: Collection, dim: int, cfg: MilvusSettings) -> None:
    timeout = cfg.timeout_s
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(collection.primary, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_CHARS)
    for name, (dtype, max_length) in collection.scalars.items():
        if max_length is None:
            schema.add_field(name, dtype)
        else:
            schema.add_field(name, dtype, max_length=max_length)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(VECTOR_FIELD, metric_type="COSINE", **index_args(cfg))
    try:
        client.create_collection(
            collection.name, schema=schema, index_params=index, timeout=timeout
        )
    except MilvusException:
        # Another writer may have created it meanwhile; then it must fit.
        if not client.has_collection(collection.name, timeout=timeout):
            raise
        check_existing(client, collection, dim, timeout)
        return
    log.info("milvus_collection_created", collection=collection.name, dim=dim)


def check_existing(client: MilvusClient, collection: Collection, dim: int, timeout: float) -> None:
    """Raises DimensionMismatchError or SchemaMismatchError, naming the fix."""
    described = client.describe_collection(collection.name, timeout=timeout)
    existing_dim = vector_dimension(described)
    if existing_dim != dim:
        raise DimensionMismatchError(
            f"Milvus collection {collection.name!r} holds {existing_dim}-dimensional "
            f"vectors but the model produces {dim}-dimensional ones. Set {collection.setting} "
            f"to another name (for example {collection.name}_{dim}), or drop the collection "
            f"{collection.name!r} so that it is recreated (its vectors cannot be compared "
            "with another model's)."
        )
    fields = {f["name"] for f in described.get("fields", [])}
    missing = sorted({collection.primary, *collection.scalars} - fields)
    if missing:
        raise SchemaMismatchError(
            f"Milvus collection {collection.name!r} lacks the field(s) {', '.join(missing)} "
            "that this version writes; drop it so that it is recreated, or point "
            "MPP_MILVUS__MESSAGES_COLLECTION / MPP_MILVUS__CAMPAIGNS_COLLECTION elsewhere."
        )
