"""Embedding throughput of the packaged model on a GPU (the device machine), bare library calls.

    python3 bench/gpu_encode.py MODEL_DIR TEXTS_FILE

Prints messages/s of ``SentenceTransformer.encode`` for fp32 and fp16 weights at several batch
sizes, on the same texts, beside the same call on the CPU threads of that machine. It sizes the
embedder for production (where a GPU embeds); the platform itself runs on CPUs here.
"""

from __future__ import annotations

import sys
import time

import torch
from sentence_transformers import SentenceTransformer


def rate(model: SentenceTransformer, texts: list[str], batch: int) -> float:
    model.encode(texts[: batch * 2], batch_size=batch)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    model_dir, texts_file = sys.argv[1], sys.argv[2]
    with open(texts_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    print(
        f"{len(texts)} texts; torch {torch.__version__}; "
        f"gpu {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    print(f"{'device':6} {'dtype':8} {'batch':>6} {'messages/s':>12}")
    for dtype in (torch.float32, torch.float16):
        model = SentenceTransformer(model_dir, device="cuda", model_kwargs={"dtype": dtype})
        for batch in (64, 256, 1024):
            print(
                f"{'cuda':6} {str(dtype)[6:]:8} {batch:6} {rate(model, texts, batch):12,.0f}",
                flush=True,
            )
    cpu = SentenceTransformer(model_dir, device="cpu", model_kwargs={"dtype": torch.float32})
    sample = texts[:2000]
    print(
        f"{'cpu':6} {'float32':8} {64:6} {rate(cpu, sample, 64):12,.0f}  "
        f"({torch.get_num_threads()} threads, {len(sample)} texts)"
    )


if __name__ == "__main__":
    main()
