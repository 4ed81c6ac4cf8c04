"""The connection to one region's Milvus: made lazily (it can be built while Milvus is down),
made again after an outage, its two collections created and loaded when missing, and every call
sorted into "Milvus does not answer" (:class:`RegionUnavailable`: retry later) or another Milvus
error (:class:`SinkError`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from pymilvus import MilvusClient, MilvusException
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from indexer.errors import RegionUnavailable, SinkError
from indexer.milvus_client import quiet_pymilvus
from indexer.schema import (
    documents_index,
    documents_schema,
    versions_collection,
    versions_index,
    versions_schema,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
}
_UNAVAILABLE_WORDS = ("fail connecting", "server unavailable", "connection refused", "deadline exceeded", "unavailable")


def _is_unavailable(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            code = code()
        except Exception:  # noqa: BLE001
            code = None
    if isinstance(code, grpc.StatusCode):
        return code in _UNAVAILABLE_CODES
    if code == 2:  # pymilvus ErrorCode CONNECT_FAILED
        return True
    text = str(getattr(exc, "message", "") or exc).lower()
    return any(word in text for word in _UNAVAILABLE_WORDS)


def _is_not_loaded(exc: MilvusException) -> bool:
    # A real Milvus says "collection not loaded" after a release (an operator's, or a restart of
    # a deployment that does not reload); the embedded C++ server loads its collections itself
    # when it restarts. Either way: load, then retry the call once.
    text = str(exc.message or "").lower()
    return exc.code == 101 or "released" in text or "not loaded" in text or "call load()" in text


class MilvusConnection:
    def __init__(self, uri: str, token: str, collection: str, dim: int, timeout_s: float, load_timeout_s: float,
                 connect_attempts: int = 3) -> None:
        self.uri = uri
        self.collection = collection
        self.versions = versions_collection(collection)
        self.dim = dim
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self.connect_attempts = max(1, connect_attempts)
        self._token = token
        self._mc: MilvusClient | None = None
        quiet_pymilvus()

    def _client(self) -> MilvusClient:
        if self._mc is not None:
            return self._mc
        mc = self._connect()
        try:
            self._ensure_collections(mc)
        except MilvusException as exc:
            _close(mc)
            if _is_unavailable(exc):
                raise RegionUnavailable(self.uri, str(exc.message)) from exc
            raise SinkError(f"{self.uri}: preparing collections: {exc.message}") from exc
        except grpc.RpcError as exc:
            _close(mc)
            raise RegionUnavailable(self.uri, str(exc)) from exc
        self._mc = mc
        return mc

    def _connect(self) -> MilvusClient:
        # pymilvus gives up at once when a server refuses a connection, and a server busy under
        # load refuses one now and then: a few quick attempts before the region counts as
        # unavailable (a real outage then costs the caller about a second more, not a failure).
        try:
            for attempt in Retrying(stop=stop_after_attempt(self.connect_attempts), reraise=True,
                                    wait=wait_exponential(multiplier=0.25, min=0.25, max=2.0),
                                    retry=retry_if_exception_type(MilvusException)):
                with attempt:
                    return MilvusClient(uri=self.uri, token=self._token, timeout=self.timeout_s)
        except MilvusException as exc:
            raise RegionUnavailable(self.uri, str(exc.message)) from exc
        raise AssertionError("unreachable")  # Retrying returns or raises

    def _ensure_collections(self, mc: MilvusClient) -> None:
        specs = [
            (self.collection, lambda: documents_schema(self.dim), lambda: documents_index(mc), "embedding", self.dim),
            (self.versions, versions_schema, lambda: versions_index(mc), "dummy", None),
        ]
        for name, schema, index, vector_field, dim in specs:
            if not mc.has_collection(name, timeout=self.timeout_s):
                try:
                    mc.create_collection(
                        name, schema=schema(), index_params=index(), consistency_level="Strong", timeout=self.timeout_s
                    )
                    log.info("created collection %s at %s", name, self.uri)
                except MilvusException as exc:
                    if "exist" not in str(exc.message).lower():  # another process won the race
                        raise
            if dim is not None:
                found = _vector_dim(mc.describe_collection(name, timeout=self.timeout_s), vector_field)
                if found != dim:
                    raise SinkError(f"{self.uri}: collection {name} has {vector_field} dim {found}, expected {dim}")
            mc.load_collection(name, timeout=self.load_timeout_s)

    def call(self, fn: Callable[[MilvusClient], T]) -> T:
        for attempt in (0, 1):
            mc = self._client()
            try:
                return fn(mc)
            except MilvusException as exc:
                if attempt == 0 and _is_not_loaded(exc):
                    log.info("collections at %s not loaded (server restarted?): loading", self.uri)
                    self._drop_client()
                    continue
                if _is_unavailable(exc):
                    self._drop_client()
                    if attempt == 0:
                        continue  # see below
                    raise RegionUnavailable(self.uri, str(exc.message)) from exc
                raise SinkError(f"{self.uri}: {exc.message}") from exc
            except grpc.RpcError as exc:
                self._drop_client()
                if attempt == 0:
                    # A channel the server closed (a GOAWAY "too many pings" from gRPC's keepalive,
                    # a server restart): once more on a new connection. Every call made here is
                    # idempotent (reads, upserts and deletes by id), so repeating one is harmless.
                    continue
                raise RegionUnavailable(self.uri, str(exc)) from exc
        raise RegionUnavailable(self.uri, "collections would not stay loaded, or the server kept dropping the connection")

    def _drop_client(self) -> None:
        mc, self._mc = self._mc, None
        if mc is not None:
            _close(mc)

    def close(self) -> None:
        self._drop_client()


def _vector_dim(description: dict[str, Any], field_name: str) -> int | None:
    for f in description.get("fields", []):
        if f.get("name") == field_name:
            dim = (f.get("params") or {}).get("dim")
            return int(dim) if dim is not None else None
    return None


def _close(mc: MilvusClient) -> None:
    try:
        mc.close()
    except Exception:  # noqa: BLE001 - closing a dead connection
        pass
