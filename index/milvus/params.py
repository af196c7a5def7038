"""How `IndexSpec` and `Metric` translate into Milvus index and search parameters.

The same spec means the same index on both backends: `flat` -> FLAT (exact), `hnsw` -> HNSW with
M / efConstruction at build time and ef at search time, `ivf` -> IVF_FLAT with nlist / nprobe
(IVF_SQ8 for `ivf_encoding="sq8"`; "pq" is refused: Milvus Lite has no IVF_PQ to test it on).
Milvus builds indexes per segment, so `ivf_nlist = 0` ("choose from the partition size" on FAISS)
becomes a fixed nlist here (`DEFAULT_NLIST` = 128: Milvus Lite seals a segment at every flush, so
segments are small, and a segment of n < nlist rows gets n one-vector lists, where 16 probes find
16 vectors -- fewer than k; with 1,024 the concurrency suite got 16 hits for k = 20 -- and a search
probes at least k lists. A deployment with large sealed segments sets `ivf_nlist` to about
4·sqrt(segment rows)),
and `ivf_train_min` has no counterpart (Milvus searches growing segments exactly by itself).
Scores: Milvus returns similarities for COSINE and IP and the squared distance for L2; the
backend negates L2 so every score is higher-is-better, as `SearchResult` promises.
"""

from __future__ import annotations

import math

from index.backend import IndexSpec, Metric

MILVUS_METRIC: dict[str, str] = {"cosine": "COSINE", "ip": "IP", "l2": "L2"}
DEFAULT_NLIST = 128
UNSUPPORTED_PQ = ("ivf_encoding 'pq' is not offered on the Milvus backend: Milvus Lite, the engine it is "
                  "tested on, has no IVF_PQ; use 'sq8' (IVF_SQ8)")


def index_params(spec: IndexSpec) -> tuple[str, dict[str, int]]:
    """(Milvus index type, build parameters) for a spec."""
    if spec.kind == "flat":
        return "FLAT", {}
    if spec.kind == "hnsw":
        return "HNSW", {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction}
    if spec.kind == "ivf":
        nlist = {"nlist": spec.ivf_nlist or DEFAULT_NLIST}
        if spec.ivf_encoding == "sq8":
            return "IVF_SQ8", nlist
        if spec.ivf_encoding == "pq":
            raise ValueError(UNSUPPORTED_PQ)
        return "IVF_FLAT", nlist
    raise ValueError(f"unknown index kind {spec.kind!r}")


MAX_FILTER_EF = 4_096


def search_params(spec: IndexSpec, metric: Metric, k: int, effort: float = 1.0) -> dict:
    """Search-time parameters. HNSW's ef must be at least k in Milvus, as it is in FAISS in effect.

    `effort` multiplies ef (HNSW) and nprobe (IVF): under an id filter that allows a fraction f
    of the partition it is 1/f, so the filtered walk meets as many allowed candidates as an
    unfiltered one meets vectors; a deep post-filter search asks for it too (IndexBackend.search;
    the FAISS backend does the same: index/faiss/hnsw.py, ivf.py)."""
    params: dict[str, int] = {}
    widen = max(1.0, effort)
    if spec.kind == "hnsw":
        params["ef"] = int(min(max(MAX_FILTER_EF, k), max(spec.hnsw_ef_search, k, spec.hnsw_ef_search * widen)))
    elif spec.kind == "ivf":
        nlist = spec.ivf_nlist or DEFAULT_NLIST
        # at least k lists: a small segment has about one vector per list (see the module docstring)
        params["nprobe"] = int(min(nlist, max(spec.ivf_nprobe, k, math.ceil(spec.ivf_nprobe * widen))))
    return {"metric_type": MILVUS_METRIC[metric], "params": params}
