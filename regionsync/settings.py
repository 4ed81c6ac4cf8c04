"""One settings object for every process of regionsync.

Values come from environment variables prefixed ``REGIONSYNC_`` (so docker-compose or a
Kubernetes deployment configures the same code) or from keyword arguments (tests). Secrets are
``SecretStr``: ``repr()``, ``model_dump()`` and :meth:`Settings.public_dict` never show them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from regionsync.errors import ConfigError
from regionsync.settings_parts import (
    KafkaSettings,
    LinkTls,
    MilvusSettings,
    ObjectStoreSettings,
    PostgresSettings,
    check_region_names,
    csv,
    env_values,
    fill_region_addresses,
    public_values,
    region_map,
)

PLACEHOLDER = "__debezium_unavailable_value"


# The embedded stack's object stores: each region's S3 port is this far from the previous one's
# (SeaweedFS opens several ports per instance, placed around its S3 port: stack/seaweed.py).
S3_PORT_STRIDE = 10


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGIONSYNC_", frozen=True, extra="ignore")

    # --- where the embedded stack keeps its data, logs and pid files
    state_dir: Path = Path(".regionsync")

    # --- Postgres. Every region has its own server (its dialog state store, its role and fence,
    # the mirrors' checkpoints); the source region's also holds the CMS database (captured) and
    # the embedding cache. pg_host/pg_port are the source region's unless the settings were made
    # for another region (:meth:`for_region`); ``pg_addresses`` names every region's server.
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "regionsync"
    pg_password: SecretStr = SecretStr("regionsync")
    pg_database: str = "cms"
    # Embedding cache and (later) dialog state live here; may be another server in production.
    pg_state_database: str = "regionsync"

    # --- Kafka-protocol brokers (one per region; kafka_bootstrap is the source region's unless
    # the settings were made for another region) and Kafka Connect (in the source region)
    kafka_bootstrap: str = "127.0.0.1:19092"
    connect_url: str = "http://127.0.0.1:18083"
    connector_name: str = "cms-documents"
    # Debezium's topic.prefix; the change topic is "<prefix>.<schema>.<table>".
    cdc_topic_prefix: str = "cms"
    replication_slot: str = "regionsync_cms"
    publication: str = "regionsync_cms"
    cms_topic: str = "regionsync.cms.documents"
    chunks_topic: str = "regionsync.doc-chunks"
    dlq_topic: str = "regionsync.dlq"
    # Regions ask the change agent here for the whole state of a document they lack (streams/heal.py).
    heal_topic: str = "regionsync.heal-requests"
    topic_partitions: int = 4

    # --- What is captured, and which columns are text vs metadata (configuration, not code)
    capture_table: str = "public.documents"
    key_column: str = "id"
    title_column: str = "title"
    text_columns: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["body"])
    metadata_columns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tags", "status", "updated_at"]
    )
    tags_column: str = "tags"
    status_column: str = "status"
    published_values: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["published"])
    # A record carries every chunk with its vector (~3 KB per 800-char chunk): 200 KB of text
    # stays under Kafka's default 1 MB message size.
    max_document_bytes: int = 200_000

    # --- Chunking and embedding
    chunk_size: int = 800  # characters
    chunk_overlap: int = 100
    embed_batch_size: int = 32
    embed_threads: int = 2
    # A region service embeds one short query per request: a second intra-op thread only waits for
    # a core on a busy machine (measured under load: one query 22-26 ms with 1 thread, 42-51 with 2).
    serve_embed_threads: int = 1
    embed_model: str = "all-MiniLM-L6-v2"
    # "onnx": ONNX Runtime on the model exported at setup (no torch in the process, ~0.3 GB);
    # "torch": sentence-transformers, the reference (needs the export extra, ~1.3 GB).
    embedder: Literal["onnx", "torch"] = "onnx"
    # Directory of the exported ONNX model; unset = the repository's vendor/models/<embed_model>
    # (scripts/setup.sh exports it there). Set it where the code is installed elsewhere (images).
    embed_onnx_dir: Path | None = None
    embedding_dim: int = 384
    # How long a region indexer's batch that is filling (more records came with the first) may
    # wait for the rest; a record that arrives alone is applied at once.
    batch_window_s: float = 0.05
    # The change agent's batch period: Faust's take_events hands over what arrived every this many
    # seconds (or batch_max_events at once). Short, so a lone change waits at most this; under
    # load batches still fill, as events queue while the previous batch is being embedded.
    batch_linger_s: float = 0.002
    batch_max_events: int = 256
    # Documents whose last emitted content hash the change agent remembers (about 200 bytes
    # each), so a title/tags change of one of them is sent as a metadata record, without vectors.
    recent_hashes_max: int = 100_000

    # --- Regions. Each owns a broker, an object store, a Postgres, a Milvus and its workers; the
    # source region also runs the CMS database, Kafka Connect + Debezium and the change agent.
    regions: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["east", "north"])
    # Empty: the first of ``regions``. It is also the active region (writes dialog turns) until a promotion.
    source_region: str = ""
    # Every region's endpoints, "region=value,region=value". A region left out gets the embedded
    # stack's address: the source region's value (kafka_bootstrap, pg_host:pg_port,
    # s3_endpoint) with the port moved by the region's index. Filled in at construction, so a
    # child process gets them all (see :meth:`for_region`).
    kafka_bootstraps: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    pg_addresses: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    s3_endpoints: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    serve_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # "region=uri,region=uri"; when empty the embedded stack's Milvus servers (stack/milvus.py) are used.
    milvus_uris: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    milvus_token: SecretStr = SecretStr("")
    milvus_base_port: int = 19531
    collection: str = "documents"

    # --- Kafka client tuning (tansu needs short session timeouts, see shared/STACK.md)
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_wait_max_ms: int = 20

    # --- Dialog: event-sourced sessions (dialog/), their per-region state stores and S3 snapshots
    # One topic, keyed (so partitioned) by session id; the standby region mirrors it.
    dialog_topic: str = "regionsync.dialog.events"
    # Each region's state store is its own database "<prefix><region>" (created on demand).
    dialog_database_prefix: str = "dialog_"
    dialog_batch_max_events: int = 2000
    # Catching up (rebuild, promotion) folds bigger batches: a session touched several times in
    # one batch is written once, and writing states was most of a replay's time (0.9 states
    # written per event at 2,000 per batch, 0.43 at 20,000, on the bench's conversations).
    dialog_catchup_batch_events: int = 20000
    # A snapshot every N changes (sessions, set-aside or dead letters) or T seconds, if anything changed.
    dialog_snapshot_every_events: int = 20000
    dialog_snapshot_every_s: float = 60.0
    dialog_snapshot_retention: int = 3  # newest complete snapshots kept; older ones are pruned
    dialog_snapshot_prefix: str = "dialog/snapshots"
    # "Replayed to the end" = at the reported high-water mark AND this many empty polls in a row
    # (tansu's high-water mark can be lower than the real end; see dialog/worker.py).
    dialog_idle_polls: int = 5
    dialog_poll_timeout_s: float = 0.1
    # Snapshot bucket: any S3 endpoint (empty: AWS's for s3_region); each region's in ``s3_endpoints``.
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_region: str = "us-east-1"
    s3_bucket: str = "regionsync-snapshots"
    s3_access_key_id: SecretStr = SecretStr("regionsync-local")
    s3_secret_access_key: SecretStr = SecretStr("regionsync-local-secret")

    def dialog_database(self, region: str) -> str:
        """Name of a region's dialog state database (one per region; another server in production)."""
        self._region_index(region)
        return f"{self.dialog_database_prefix}{region}"
    # "local": a turn is acknowledged once this region's broker holds its events (the RPO is the
    # replication lag). "mirrored": also once the other regions' brokers hold them (their
    # replicators' checkpoints say so): RPO 0, for longer turns, refused while no standby is in sync.
    dialog_ack_mode: Literal["local", "mirrored"] = "local"
    dialog_seal: bool = True  # seal turns with the session's key (dialog/sealing.py); off: the bench's baseline
    mirrored_ack_timeout_s: float = 5.0
    # "mirrored": how many regions (this one included) must hold a turn before it is acknowledged,
    # as Kafka's min.insync.replicas. 2: a turn is refused (503) while no standby is in sync: RPO 0.
    # 1: acknowledged without the regions out of sync (RPO 0 only while one is in sync).
    mirrored_min_insync_regions: int = Field(default=2, ge=1)
    # Promotions travel between regions on this topic (one partition per region's broker).
    control_topic: str = "regionsync.control"
    # A region service that starts while its store says it is the active one first reads every
    # other region's control topic (a promotion may have happened while it was away); it takes
    # no turn meanwhile. A peer that does not answer within this many seconds is given up on.
    rejoin_timeout_s: float = 10.0

    # --- Replication between regions (mirror/): one replicator per ordered pair of regions,
    # running in the target region.
    mirror_batch_max: int = 5000
    # A replicator confirms it holds everything of a partition at most this often when idle.
    mirror_idle_check_s: float = 1.0

    # --- Region services (serve/): one HTTP service per region, and every worker's /metrics
    serve_host: str = "127.0.0.1"
    # Region i of ``regions`` listens on serve_base_port + i.
    serve_base_port: int = 18700
    # Metrics ports of the long-running workers: the change agent on metrics_base_port, then one
    # indexer per region, then one dialog worker per region (see :meth:`metrics_port`).
    metrics_base_port: int = 18720
    # Callers authenticate with bearer tokens by role (serve/auth.py): from the environment
    # ("role:token,role:token") and a file of "role:token" lines, re-read when it changes (a
    # rotation needs no restart). Unset file: <state_dir>/secrets/api-tokens (`stack up` writes it).
    api_tokens: SecretStr = SecretStr("")
    api_tokens_file: Path | None = None
    # TLS (serve/tls.py): the region services serve HTTPS with tls_dir's serve.pem + serve.key and
    # every client verifies them against its ca.pem. Unset dir: <state_dir>/pki (`stack up` makes a
    # local CA and the certificates there).
    tls: bool = False
    tls_dir: Path | None = None
    # Links between regions: mutual TLS (tls_dir's CA, mirror.pem/.key) to a broker's edge
    # (``kafka_links``; a region left out: link_base_port + its index, stack/edge.py) and to a
    # database as the read-only role ``link_pg_user``. Off: plain addresses (docs/security.md).
    link_tls: bool = True
    link_base_port: int = 19392
    kafka_links: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    link_pg_user: str = "regionsync_link"
    # /readyz: a region is ready while its index and dialog state are at most this far behind.
    ready_max_index_lag: int = 1000
    ready_max_dialog_lag: int = 1000
    # How long a promotion waits for the region's dialog state to reach the end of the log.
    promote_timeout_s: float = 60.0
    # A promotion waiting this long for the active-region row is held up by a hung turn of the old
    # active region: it then fences that region's writer sessions (serve/roles.py). A turn holds
    # the row for milliseconds; one still running after this is cut (503, retried elsewhere).
    promote_fence_after_s: float = 0.5
    query_max_chars: int = 2000
    search_max_k: int = 50
    # /ask composes an extractive answer from the best passages unless an OpenAI-compatible chat
    # endpoint is set ("https://host/v1"); it then writes the answer from the same passages. When
    # it fails or takes longer than answer_llm_timeout_s, the answer is the extractive one (same
    # sources, composer "extractive (llm failed)"), counted in regionsync_answer_llm_requests_total.
    answer_llm_url: str = ""
    answer_llm_model: str = ""
    answer_llm_api_key: SecretStr = SecretStr("")
    answer_llm_timeout_s: float = 20.0
    # A Prometheus for the embedded stack (deploy/prometheus/, started by `regionsync stack up`).
    prometheus_port: int = 19090

    def serve_port(self, region: str) -> int:
        return self.serve_base_port + self._region_index(region)

    def serve_url(self, region: str) -> str:
        if region in self.serve_urls:
            return self.serve_urls[region]
        return f"{'https' if self.tls else 'http'}://{self.serve_host}:{self.serve_port(region)}"

    def metrics_port(self, worker: str, region: str | None = None, source: str | None = None) -> int:
        """Port of a worker's /metrics: ``worker`` is "changes", "indexer", "dialog" or "mirror"
        (the replicator from ``source`` into ``region``)."""
        if worker == "changes":
            return self.metrics_base_port
        if worker == "mirror":
            pair = (source or "", region or "")
            if pair not in self.mirror_pairs():
                raise ConfigError(f"no replicator from {source!r} to {region!r}; regions: {', '.join(self.regions)}")
            return self.metrics_base_port + 1 + 2 * len(self.regions) + self.mirror_pairs().index(pair)
        offset = {"indexer": 1, "dialog": 1 + len(self.regions)}[worker]
        return self.metrics_base_port + offset + self._region_index(region or "")

    def mirror_pairs(self) -> list[tuple[str, str]]:
        """Every (source, target) pair of regions: one replicator each."""
        return [(a, b) for a in self.regions for b in self.regions if a != b]

    def _region_index(self, region: str) -> int:
        if region not in self.regions:
            raise ConfigError(f"unknown region {region!r}; configured regions: {', '.join(self.regions)}")
        return self.regions.index(region)

    _validate_csv = field_validator(
        "text_columns", "metadata_columns", "published_values", "regions", mode="before"
    )(csv)

    _region_names = field_validator("regions", mode="after")(check_region_names)

    @field_validator("kafka_bootstraps", "pg_addresses", "s3_endpoints", "serve_urls", "kafka_links", mode="before")
    @classmethod
    def _parse_maps(cls, value: Any) -> Any:
        return region_map(value)

    @model_validator(mode="after")
    def _complete_regions(self) -> Settings:
        """Resolve the source region and give every region an address of each kind, so every
        child process gets the whole map (and no child derives an address from another region's)."""
        source = self.source_region or self.regions[0]
        if source not in self.regions:
            raise ValueError(f"source_region {source!r} is not one of the regions {self.regions}")
        maps = fill_region_addresses(
            self.regions, source, self.kafka_bootstrap, f"{self.pg_host}:{self.pg_port}", self.s3_endpoint,
            (self.kafka_bootstraps, self.pg_addresses, self.s3_endpoints), S3_PORT_STRIDE,
        )
        links = {r: self.kafka_links.get(r) or f"127.0.0.1:{self.link_base_port + i}" for i, r in enumerate(self.regions)}
        names = ("source_region", "kafka_bootstraps", "pg_addresses", "s3_endpoints", "kafka_links")
        for name, value in zip(names, (source, *maps, links), strict=True):
            object.__setattr__(self, name, value)
        return self

    @field_validator("state_dir", "embed_onnx_dir", "api_tokens_file", "tls_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Child processes run with other working directories: pin the path down once.
        return value.expanduser().resolve() if value is not None else None

    @field_validator("milvus_uris", mode="before")
    @classmethod
    def _parse_uris(cls, value: Any) -> Any:
        return region_map(value)

    # ------------------------------------------------------------------ regions
    def for_region(self, region: str) -> Settings:
        """These settings as seen from inside ``region``: its broker, its Postgres and its object
        store become kafka_bootstrap, pg_host/pg_port and s3_endpoint. Every process that lives in
        a region (indexer, dialog worker, service, replicator into it) works on these; idempotent."""
        self._region_index(region)
        host, port = self.pg_addresses[region].rsplit(":", 1)
        return self.model_copy(update={
            "kafka_bootstrap": self.kafka_bootstraps[region],
            "pg_host": host,
            "pg_port": int(port),
            "s3_endpoint": self.s3_endpoints[region],
        })

    def source(self) -> Settings:
        """The settings of the source region (CMS database, Connect, change agent, embedding cache)."""
        return self.for_region(self.source_region)

    def others(self, region: str) -> list[str]:
        """Every region but ``region``."""
        self._region_index(region)
        return [r for r in self.regions if r != region]

    # ------------------------------------------------------------------ derived values
    @property
    def cdc_topic(self) -> str:
        return f"{self.cdc_topic_prefix}.{self.capture_table}"

    def pg_dsn(self, database: str | None = None) -> str:
        """A libpq URI for psycopg. Contains the password: never log it (use :meth:`pg_dsn_masked`)."""
        return self.postgres().dsn(database)

    def pg_dsn_masked(self, database: str | None = None) -> str:
        return self.postgres().dsn_masked(database)

    # ------------------------------------------------------------------ each adapter's part
    def kafka(self, region: str | None = None) -> KafkaSettings:
        """The Kafka clients' part: ``region``'s broker (default: the one these settings see)."""
        return KafkaSettings(self.kafka_bootstraps[region] if region else self.kafka_bootstrap,
                             self.session_timeout_ms, self.heartbeat_interval_ms, self.fetch_wait_max_ms)

    def kafka_link(self, region: str) -> KafkaSettings:
        """The Kafka part for a client in another region: ``region``'s edge, mutual TLS (``link_tls``)."""
        part = self.kafka(region)
        return LinkTls(self.tls_root()).kafka(part, self.kafka_links[region]) if self.link_tls else part

    def postgres_link(self, region: str) -> PostgresSettings:
        """The Postgres part for a client in another region: the link role by certificate (``link_tls``)."""
        part = self.postgres(region)
        return LinkTls(self.tls_root()).postgres(part, self.link_pg_user) if self.link_tls else part

    def postgres(self, region: str | None = None) -> PostgresSettings:
        """The Postgres part: ``region``'s server (default: the one these settings see)."""
        host, port = (self.pg_addresses[region].rsplit(":", 1) if region else (self.pg_host, self.pg_port))
        ca = self.tls_root() / "ca.pem" if self.tls else None
        return PostgresSettings(host, int(port), self.pg_user, self.pg_password, self.pg_database, ca)

    def tls_root(self) -> Path:
        """The TLS directory: ca.pem, serve.pem and serve.key, client certificates (serve/tls.py)."""
        return self.tls_dir or self.state_dir / "pki"

    def object_store(self, region: str | None = None) -> ObjectStoreSettings:
        """The object store's part: ``region``'s endpoint (default: the one these settings see)."""
        return ObjectStoreSettings(self.s3_endpoints[region] if region else self.s3_endpoint, self.s3_region,
                                   self.s3_bucket, self.s3_access_key_id, self.s3_secret_access_key)

    def milvus(self, region: str) -> MilvusSettings:
        """The Milvus part: ``region``'s server and the collection's shape."""
        return MilvusSettings(self.milvus_uri(region), self.milvus_token, self.collection, self.embedding_dim)

    def milvus_uri(self, region: str) -> str:
        if region in self.milvus_uris:
            return self.milvus_uris[region]
        return f"http://127.0.0.1:{self.milvus_base_port + self._region_index(region)}"

    def region_group(self, region: str) -> str:
        """Consumer group of a region's indexer: each region keeps its own progress."""
        return f"regionsync-indexer-{region}"

    def public_dict(self) -> dict[str, Any]:
        """Settings for display: secrets masked."""
        return public_values(self.model_dump(mode="json"), self.model_dump())

    def to_env(self) -> dict[str, str]:
        """Environment that makes a child process build the same settings."""
        return env_values("REGIONSYNC_", self.model_dump())

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.to_env())
        return env
