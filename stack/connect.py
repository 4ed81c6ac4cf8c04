"""The Kafka Connect worker of the embedded stack: one distributed worker running Debezium from
jars, in the source region, on that region's broker.

The classpath is ``vendor/connect-libs/`` built by ``scripts/fetch_connect_jars.py`` (see
shared/STACK.md for why it is assembled by hand). Distributed mode keeps connector configs and
source offsets in the broker's compacted topics, which live in the source region's object store
(stack/broker.py): the worker, and the broker, can be killed and started again and
Debezium resumes where its last offset flush left it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from regionsync.errors import StackError
from regionsync.settings import Settings
from stack import procs

log = logging.getLogger(__name__)

NAME = "connect"
LIBS_ENV = "REGIONSYNC_CONNECT_LIBS"
START_TIMEOUT_S = 180.0  # a loaded machine: the worker reads its internal topics from the broker first
GROUP_ID = "regionsync-connect"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# Client config dumps and Jersey/Reflections chatter drown the useful lines.
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.common.name = org.apache.kafka.common
logger.common.level = warn
logger.jersey.name = org.glassfish
logger.jersey.level = warn
"""


def libs_dir() -> Path:
    """The jar directory: ``$REGIONSYNC_CONNECT_LIBS`` or the repository's ``vendor/connect-libs``."""
    override = os.environ.get(LIBS_ENV)
    candidates = [Path(override)] if override else [Path(__file__).resolve().parents[1] / "vendor" / "connect-libs"]
    for path in candidates:
        if path.is_dir() and any(path.glob("connect-runtime-*.jar")):
            return path.resolve()
    raise StackError(
        f"Kafka Connect jars not found in {candidates[0]}: run `python scripts/fetch_connect_jars.py`"
        + (f" --dest {candidates[0]}" if override else "")
    )


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError("java not found: Kafka Connect needs a Java 17+ runtime (scripts/setup.sh installs it)")
    return found


def rest_host_port(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.connect_url)
    if not parts.hostname or not parts.port:
        raise StackError(f"connect_url {settings.connect_url!r} needs an explicit host and port")
    return parts.hostname, parts.port


def worker_properties(settings: Settings) -> str:
    host, port = rest_host_port(settings)
    # The worker group's own timeouts are shorter than settings.session_timeout_ms: tansu holds
    # every join for session timeout / 2 and a connector apply costs two or three rebalances, so
    # 3 s cuts a fresh connector's time to RUNNING by about 5 s. Heartbeats run on their own
    # thread, so a busy JVM still keeps its membership.
    worker_timeouts = ["session.timeout.ms=3000", "heartbeat.interval.ms=750"]
    consumer_timeouts = [
        f"consumer.session.timeout.ms={settings.session_timeout_ms}",
        f"consumer.heartbeat.interval.ms={settings.heartbeat_interval_ms}",
    ]
    lines = [
        f"bootstrap.servers={settings.kafka_bootstrap}",
        f"group.id={GROUP_ID}",
        "key.converter=org.apache.kafka.connect.json.JsonConverter",
        "value.converter=org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable=false",
        "value.converter.schemas.enable=false",
        f"config.storage.topic={GROUP_ID}-configs",
        f"offset.storage.topic={GROUP_ID}-offsets",
        f"status.storage.topic={GROUP_ID}-status",
        "config.storage.replication.factor=1",
        "offset.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "offset.storage.partitions=1",
        "status.storage.partitions=1",
        "offset.flush.interval.ms=1000",
        f"listeners=http://{host}:{port}",
        f"rest.advertised.host.name={host}",
        f"rest.advertised.port={port}",
        # ServiceLoader discovery instead of scanning every jar: REST up in ~3 s instead of ~12 s.
        "plugin.discovery=service_load",
        # One worker: a restarted worker gets its tasks back at once instead of after 5 minutes.
        "scheduled.rebalance.max.delay.ms=0",
        # tansu: a group join waits session timeout / 2 and a parked fetch is not woken by new
        # data, so short session timeouts and short fetch waits (worker group, internal topic
        # readers, and the consumers of sink tasks alike).
        *worker_timeouts,
        "fetch.max.wait.ms=50",
        *consumer_timeouts,
        "consumer.fetch.max.wait.ms=50",
        # Debezium's producer: not idempotent, one request in flight (regionsync/settings_parts.py,
        # KafkaSettings.producer: tansu's S3 engine can answer a retried idempotent batch as a
        # duplicate though it never wrote it, and the Java client counts that as delivered).
        "producer.enable.idempotence=false",
        "producer.max.in.flight.requests.per.connection=1",
        "producer.acks=all",
        # Source tasks (Debezium) may override producer settings per connector.
        "connector.client.config.override.policy=All",
        # The connector's database.password is "${env:CMS_PG_PASSWORD}", resolved from this
        # worker's own environment when the task starts: Connect's REST answers (GET
        # /connectors/NAME/config, its config topic) hold the reference, never the password.
        "config.providers=env",
        f"config.providers.env.class={ENV_PROVIDER}",
        f"config.providers.env.param.allowlist.pattern=^{PASSWORD_ENV}$",
    ]
    return "\n".join(lines) + "\n"


ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
PASSWORD_ENV = "CMS_PG_PASSWORD"  # named in connectors/templates/postgres-documents.json


def work_dir(settings: Settings) -> Path:
    path = settings.state_dir / "connect"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_up(settings: Settings) -> bool:
    try:
        return requests.get(f"{settings.connect_url.rstrip('/')}/connectors", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# One connector task on a 2-core machine: the serial collector (G1's remembered sets and region
# reserve cost ~100 MB of RSS here) and a heap that gives memory back when the snapshot is over.
# Debezium's queue is bounded by max.queue.size in the template, so 384 MB is room to spare.
JVM_OPTIONS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30",
               "-XX:ReservedCodeCacheSize=64m")


def start(settings: Settings, timeout: float = START_TIMEOUT_S) -> procs.Proc:
    """Start the worker and wait until its REST API answers; kill it if it does not within ``timeout``."""
    settings = settings.source()
    libs = libs_dir()
    java = java_binary()
    host, port = rest_host_port(settings)
    if procs.port_open(host, port):
        # Jetty would fail to bind while the JVM stays up: say so now instead of after the timeout.
        raise StackError(f"cannot start Kafka Connect: {host}:{port} is already in use (is a worker running?)")
    wdir = work_dir(settings)
    props = wdir / "worker.properties"
    props.write_text(worker_properties(settings))
    log4j = wdir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    argv = [
        java, *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp", f"{libs}/*",
        "org.apache.kafka.connect.cli.ConnectDistributed", str(props),
    ]
    started = time.monotonic()
    env = {**os.environ, PASSWORD_ENV: settings.pg_password.get_secret_value()}
    proc = procs.spawn(settings.state_dir, NAME, argv, cwd=wdir, env=env)
    try:
        procs.wait_until(lambda: is_up(settings), timeout, "Kafka Connect REST API", proc, interval=0.2)
    except BaseException:
        # A worker that failed to start can keep its JVM alive: never leave it behind.
        procs.stop(settings.state_dir, NAME, timeout=5.0)
        raise
    log.info("Kafka Connect up in %.1fs at %s", time.monotonic() - started, settings.connect_url)
    return proc


def stop(settings: Settings) -> None:
    procs.stop(settings.state_dir, NAME)
