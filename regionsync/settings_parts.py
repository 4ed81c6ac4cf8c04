"""The part of the settings each adapter receives.

:class:`~regionsync.settings.Settings` is the whole configuration (one environment, every
process). An adapter needs a handful of its values, for one region: the Kafka adapter a broker
address and the client timeouts, the Postgres connections a server and its credentials, the
object store an endpoint and keys, the Milvus connection a URI, a token and the collection's
shape. Each is a frozen value built by ``Settings.kafka(region)``, ``Settings.postgres(region)``,
``Settings.object_store(region)`` and ``Settings.milvus(region)``, so an adapter cannot read (or
leak) what is not its business, and whatever every client of a kind must carry later (TLS
settings, say) is added in one place. Secrets stay ``SecretStr``: their ``repr`` is masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import SecretStr


def region_map(value: Any) -> Any:
    """"region=value,region=value" -> dict (a dict passes through)."""
    if isinstance(value, str):
        out: dict[str, str] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            region, _, item = part.partition("=")
            out[region.strip()] = item.strip()
        return out
    return value


_REGION_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


def check_region_names(value: list[str]) -> list[str]:
    """A region's name prefixes the topics replicated from it ("east.regionsync.dialog.events"),
    so it must be a topic-name fragment without the separator; names are unique, one at least."""
    for name in value:
        if not _REGION_NAME.fullmatch(name):
            raise ValueError(f"region name {name!r}: use letters, digits, '-' or '_' (no '.'), at most 40")
    if len(set(value)) != len(value):
        raise ValueError(f"regions repeat a name: {value}")
    if not value:
        raise ValueError("at least one region is needed")
    return value


def csv(value: Any) -> Any:
    """"a,b,c" -> ["a", "b", "c"] (a list passes through)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def fill_region_addresses(
    regions: list[str], source: str, kafka_bootstrap: str, pg_address: str, s3_endpoint: str,
    given: tuple[Mapping[str, str], Mapping[str, str], Mapping[str, str]], s3_port_stride: int,
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Every region's broker, Postgres and object store: the ``given`` maps' (kafka, pg, s3)
    addresses, and for a region left out the embedded stack's layout: the flat (source region's)
    address with its port moved by the region's distance from the source in ``regions``."""
    kafka_host, kafka_port = kafka_bootstrap.rsplit(":", 1)
    pg_host, pg_port = pg_address.rsplit(":", 1)
    s3 = urlsplit(s3_endpoint)
    base = regions.index(source)
    kafka, pg, s3s = dict(given[0]), dict(given[1]), dict(given[2])
    for i, region in enumerate(regions):
        shift = i - base
        kafka.setdefault(region, f"{kafka_host}:{int(kafka_port) + shift}")
        pg.setdefault(region, f"{pg_host}:{int(pg_port) + shift}")
        if s3.hostname and s3.port:
            s3s.setdefault(region, f"{s3.scheme}://{s3.hostname}:{s3.port + shift * s3_port_stride}")
        else:
            s3s.setdefault(region, s3_endpoint)
    return kafka, pg, s3s


def public_values(plain: Mapping[str, Any], typed: Mapping[str, Any]) -> dict[str, Any]:
    """Settings for display (``plain``: the JSON dump, ``typed``: the Python dump): secrets masked."""
    out = dict(plain)
    for key, value in typed.items():
        if isinstance(value, SecretStr):
            out[key] = "***" if value.get_secret_value() else ""
    return out


def env_values(prefix: str, typed: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables that rebuild the same settings in a child process (secrets in clear:
    an environment is not a log)."""
    env: dict[str, str] = {}
    for key, value in typed.items():
        name = f"{prefix}{key.upper()}"
        if value is None:  # unset: the child falls back to the same default
            continue
        if isinstance(value, SecretStr):
            env[name] = value.get_secret_value()
        elif isinstance(value, list):
            env[name] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            env[name] = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            env[name] = str(value)
    return env


@dataclass(frozen=True)
class KafkaSettings:
    """What a Kafka client of one region's broker needs (tansu needs short session timeouts:
    shared/STACK.md)."""

    bootstrap: str
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_wait_max_ms: int = 20
    # librdkafka's security keys (``security.protocol``, ``ssl.*``): empty for a broker in the
    # same region, mutual TLS for another region's (``Settings.kafka_link``).
    security: Mapping[str, str] = field(default_factory=dict)

    def client(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A client configuration for this broker: its address and security, then the caller's own keys."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, **self.security}
        config.update(extra or {})
        return config

    def reader(self, group: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A consumer that is assigned partitions (never subscribes, never commits): ``group`` is a label."""
        return self.client({
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            "enable.partition.eof": False,
            **(extra or {}),
        })

    def member(self, group: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A consumer that joins ``group`` (subscribes, commits by hand after its sink's flush)."""
        return self.client({
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "fetch.wait.max.ms": self.fetch_wait_max_ms,
            **(extra or {}),
        })

    def producer(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A producer acknowledged by the whole in-sync set, one request in flight, retrying a send
        that was not acknowledged, and NOT idempotent: tansu's S3 engine (0.6.0, dynostore.rs)
        stores an idempotent batch's new sequence number before it writes the batch. A broker killed
        between the two answers the client's retry with DUPLICATE_SEQUENCE_NUMBER, which librdkafka
        and the Java client both count as delivered: an acknowledged record that is in no batch (a
        CDC delete and dialog turns were lost that way in kill -9 trials). A plain retry may write
        a record twice; every consumer here is idempotent (version guards, the dialog reducer's
        duplicate check). One request in flight keeps a partition's order across retries."""
        return self.client({"acks": "all", "enable.idempotence": False,
                            "max.in.flight.requests.per.connection": 1, **(extra or {})})


@dataclass(frozen=True)
class PostgresSettings:
    """One region's Postgres server and the role regionsync logs in with."""

    host: str
    port: int
    user: str
    password: SecretStr
    database: str
    # TLS: the CA the server's certificate must chain to (sslmode=verify-full: encrypted, and the
    # server is who the host name says); None: libpq's default (prefer: encrypted if offered).
    ca_file: Path | None = None
    # A client certificate and its key (mutual TLS: the server authenticates the role by it).
    cert_file: Path | None = None
    key_file: Path | None = None

    def dsn(self, database: str | None = None) -> str:
        """A libpq URI for psycopg. Contains the password: never log it (use :meth:`dsn_masked`)."""
        pw = quote(self.password.get_secret_value(), safe="")
        return f"postgresql://{self.user}:{pw}@{self.host}:{self.port}/{database or self.database}{self._tls()}"

    def dsn_masked(self, database: str | None = None) -> str:
        return f"postgresql://{self.user}:***@{self.host}:{self.port}/{database or self.database}{self._tls()}"

    def _tls(self) -> str:
        if not self.ca_file:
            return ""
        client = (f"&sslcert={quote(str(self.cert_file))}&sslkey={quote(str(self.key_file))}"
                  if self.cert_file and self.key_file else "")
        return f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file))}{client}"


@dataclass(frozen=True)
class LinkTls:
    """The client side of a link between regions: the CA in ``root`` and the replicators' client
    certificate (``mirror.pem``/``mirror.key``, stack/pki.py)."""

    root: Path

    def kafka(self, part: KafkaSettings, edge: str) -> KafkaSettings:
        """``part``'s broker through its edge (stack/edge.py), the edge's name verified."""
        return replace(part, bootstrap=edge, security={
            "security.protocol": "SSL", "ssl.ca.location": str(self.root / "ca.pem"),
            "ssl.certificate.location": str(self.root / "mirror.pem"),
            "ssl.key.location": str(self.root / "mirror.key"), "ssl.endpoint.identification.algorithm": "https"})

    def postgres(self, part: PostgresSettings, user: str) -> PostgresSettings:
        """``part``'s server as ``user``, authenticated by the client certificate (no password)."""
        return replace(part, user=user, password=SecretStr(""), ca_file=self.root / "ca.pem",
                       cert_file=self.root / "mirror.pem", key_file=self.root / "mirror.key")


@dataclass(frozen=True)
class ObjectStoreSettings:
    """One region's S3-compatible object store (an empty endpoint: AWS's own for ``region``)."""

    endpoint: str
    region: str
    bucket: str
    access_key_id: SecretStr
    secret_access_key: SecretStr


@dataclass(frozen=True)
class MilvusSettings:
    """One region's Milvus and the shape of the collection regionsync keeps there."""

    uri: str
    token: SecretStr
    collection: str
    dim: int
