"""Service configuration, read from environment variables prefixed `NOBACKFILL_`.

One place for every knob so that deployments (Docker, CI, a laptop) differ only by environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOBACKFILL_", env_file=None, extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where the SQLite file and index snapshots live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is a SQLite file under data_dir."
    )
    api_key: SecretStr | None = Field(None, description="When set, writes and admin calls need it.")
    read_api_key: SecretStr | None = Field(
        None, description="Optional read-only key: queries, reads and a read-only dashboard login."
    )
    session_hours: float = Field(12.0, gt=0, description="Lifetime of a dashboard login.")
    secure_cookies: bool = Field(False, description="Mark the session cookie Secure (serve over HTTPS).")
    auth_failures_per_client: str = Field(
        "10/minute", description="Failed logins or wrong API keys one client address may make before 429 "
        "(a `limits` rate string, e.g. '10/minute;50/hour')."
    )
    login_failures_overall: str = Field(
        "100/minute", description="Failed dashboard logins from all addresses together before the login form "
        "answers 429 (API keys keep working)."
    )
    trusted_origins: list[str] = Field(
        default_factory=list, description="Origins (scheme://host[:port]) besides the service's own Host that may "
        "post the login form, e.g. the public address behind a reverse proxy."
    )
    read_requires_key: bool = Field(
        False, description="When true, reads and queries need the API key too (closed deployment)."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    faiss_threads: int = Field(
        1, ge=1, description="OpenMP threads per FAISS search; 1 wins for one-query-per-request serving."
    )
    faiss_write_threads: int = Field(
        0, ge=0, description="OpenMP threads for adding a batch to a FAISS index (HNSW insertion: most of an "
        "ingest's time); 0 = every core. Set 1 to keep ingest from taking CPU from concurrent queries.")
    inline_search_work: int = Field(
        20_000_000, ge=0,
        description="Searches estimated below this many multiply-adds run on the event loop, larger ones "
        "in the thread pool (0 = always the thread pool).",
    )
    hit_cache_items: int = Field(
        200_000, ge=0, description="Item records (key, payload) cached for query results (0 = always ask the database)."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    index_backend: str = Field(
        "faiss", description="Where gallery vectors live: a sub-package of index/ (faiss: embedded, snapshots "
        "under data_dir; milvus: a Milvus server or cluster, or embedded Milvus Lite)."
    )
    milvus_uri: str = Field(
        "", description="Milvus to use with index_backend=milvus: a local path = embedded Milvus Lite (one process "
        "only), http://host:19530 = a Milvus server or cluster. Empty = Milvus Lite at data_dir/milvus.db."
    )
    milvus_token: SecretStr | None = Field(None, description="Milvus credentials (`user:password` or an API key).")
    milvus_prefix: str = Field(
        "nobackfill_",
        description="Prefix of every Milvus collection this deployment creates (deployments can share one Milvus).",
    )
    milvus_flush_seconds: float = Field(
        2.0, ge=0, description="Flush (seal) Milvus partitions written to within this interval, so searches "
        "use their index (Milvus Lite searches unflushed rows by brute force); 0 = leave sealing to Milvus.",
    )
    milvus_refresh_seconds: float = Field(
        1.0, ge=0, description="How long partition counts and lists read from Milvus are reused before asking "
        "again: the bound on how soon this process sees partitions another replica created or filled.",
    )

    @field_validator("auth_failures_per_client", "login_failures_overall")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse_many  # a rate string the throttle cannot read must stop start-up

        parse_many(value)
        return value

    @field_validator("index_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from index import available_backends

        if value not in available_backends():
            raise ValueError(f"unknown index backend {value!r}; choose from {', '.join(available_backends())}")
        return value

    @field_validator("milvus_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        from index.milvus.names import check_prefix  # the one rule for Milvus collection names

        return check_prefix(value)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    max_batch_items: int = Field(10_000, ge=1, description="Largest upsert batch (items per request).")
    max_payload_bytes: int = Field(64 * 1024, ge=2, description="Largest payload of one item, as compact JSON "
                                   "(UTF-8 bytes); a larger one is refused with 413 naming the item.")
    max_query_batch: int = Field(1_024, ge=1, description="Largest number of query vectors per request.")
    max_dim: int = Field(8_192, ge=1, description="Largest embedding dimension a model may declare.")
    snapshot_every_changes: int = Field(
        50_000, ge=1, description="Write an index snapshot after this many changes to a collection."
    )
    heap_trim_idle_seconds: float = Field(
        1.0, ge=0, description="Return freed heap memory to the OS (glibc malloc_trim) once writes have paused "
        "this long (0 = never): an ingest otherwise leaves ~60 MB per 100k x 384 vectors in the allocator."
    )
    snapshot_interval_seconds: float = Field(
        30.0, gt=0, description="How often the snapshot thread checks whether a snapshot is due."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="FULL fsyncs every commit (survives power loss); NORMAL survives process crashes."
    )
    run_worker: bool = Field(True, description="Run the job worker inside the service process.")
    job_threads: int = Field(1, ge=0, description="torch threads for training jobs (0 = torch's default).")
    job_stale_seconds: float = Field(
        120.0, gt=0, description="A running job whose heartbeat is older than this is taken as interrupted."
    )
    job_max_attempts: int = Field(2, ge=1, description="Runs of a job before an interruption marks it failed.")
    min_training_pairs: int = Field(100, ge=10, description="Fewest pairs a training job accepts.")
    max_holdout_pairs: int = Field(5_000, ge=10, description="Most pairs held out to evaluate a transformation.")
    training_gallery_sample: int = Field(
        20_000, ge=100, description="Most gallery vectors a training job samples when it fits near the gallery "
        "(`fit_near_gallery`).",
    )
    routing_refresh_seconds: float = Field(
        2.0, gt=0, description="How often to check for activations made by another process (a separate worker)."
    )
    log_level: str = "info"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nobackfill.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    def index_backend_options(self) -> dict:
        """The keyword arguments `index.create_backend` needs for the chosen backend."""
        if self.index_backend == "milvus":
            return {"uri": self.milvus_uri or str((self.data_dir / "milvus.db").resolve()),
                    "token": self.milvus_token.get_secret_value() if self.milvus_token else None,
                    "prefix": self.milvus_prefix, "refresh_seconds": self.milvus_refresh_seconds,
                    "flush_seconds": self.milvus_flush_seconds}
        return {"directory": self.index_dir, "device": self.device, "threads": self.faiss_threads,
                "write_threads": self.faiss_write_threads or None}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
