"""How `IndexSpec` and `Metric` translate into Milvus index and search parameters.

The same spec means the same index on both backends: `flat` -> FLAT (exact), `hnsw` -> HNSW with
M / efConstruction at build time and ef at search time, `ivf` -> IVF_FLAT with nlist / nprobe.
Milvus builds indexes per segment, so `ivf_nlist = 0` ("choose from the partition size" on FAISS)
becomes a fixed nlist here (`DEFAULT_NLIST`, Milvus' usual choice for segments of up to ~1M rows),
and `ivf_train_min` has no counterpart (Milvus searches growing segments exactly by itself).
Scores: Milvus returns similarities for COSINE and IP and the squared distance for L2; the
backend negates L2 so every score is higher-is-better, as `SearchResult` promises.
"""

from __future__ import annotations

from index.backend import IndexSpec, Metric

MILVUS_METRIC: dict[str, str] = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
DEFAULT_NLIST = 1024


def index_params(spec: IndexSpec) -> tuple[str, dict[str, int]]:
    """(Milvus index type, build parameters) for a spec."""
    if spec.kind == "flat":
        return "FLAT", {}
    if spec.kind == "hnsw":
        return "HNSW", {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction}
    if spec.kind == "ivf":
        return "IVF_FLAT", {"nlist": spec.ivf_nlist or DEFAULT_NLIST}
    raise ValueError(f"unknown index kind {spec.kind!r}")


def search_params(spec: IndexSpec, metric: Metric, k: int) -> dict:
    """Search-time parameters. HNSW's ef must be at least k in Milvus, as it is in FAISS in effect."""
    params: dict[str, int] = {}
    if spec.kind == "hnsw":
        params["ef"] = max(spec.hnsw_ef_search, k)
    elif spec.kind == "ivf":
        params["nprobe"] = spec.ivf_nprobe
    return {"metric_type": MILVUS_METRIC[metric], "params": params}
