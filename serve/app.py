"""The region service's HTTP API (FastAPI): the OpenAPI spec at /openapi.json, docs at /docs.

Why FastAPI + uvicorn: request and response models double as validation and as the OpenAPI spec
that schemathesis tests against, and it is what this ecosystem (LangServe, vLLM's OpenAI server)
expects. Endpoints are sync functions: the work (model, Milvus, Postgres, Kafka) is blocking
and runs in the server's thread pool.

Bad input never reaches the region: models reject empty, oversized or non-UTF-8 text, unknown
fields and out-of-range numbers with 422 before anything is written; a turn is written whole or
not at all (the dialog manager publishes a turn's events together and only then answers).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run time,
# and the request models and limits are defined inside create_app (they depend on the settings).
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Header, Path, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from dialog.errors import DeliveryError, DialogError
from indexer.errors import IndexerError
from indexer.sink import Hit
from serve.answers import Composed, source_label
from serve.errors import NotActive, NotCaughtUp, ServeError, UnknownSession
from serve.metrics import ServiceMetrics
from serve.region import RegionService

log = logging.getLogger(__name__)

SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
INTENT = r"^[a-z][a-z0-9_]{0,63}$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _clean_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid UTF-8 (lone surrogate)") from exc
    if _CONTROL.search(value):
        raise ValueError("text contains control characters")
    if not value.strip():
        raise ValueError("text is empty (only whitespace)")
    return value


class Error(BaseModel):
    detail: str


class Refused(BaseModel):
    detail: str
    active_region: str


class Source(BaseModel):
    kind: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    lsn: int | None = None
    op: str | None = None
    ts_ms: int | None = None


class SearchHit(BaseModel):
    doc_id: str
    chunk: int
    title: str
    text: str
    score: float
    version: int
    tags: list[str]
    source: Source


class SearchResponse(BaseModel):
    region: str
    query: str
    hits: list[SearchHit]


class Citation(BaseModel):
    n: int
    label: str
    doc_id: str
    chunk: int
    title: str
    score: float
    version: int
    source: Source


class AskResponse(BaseModel):
    region: str
    question: str
    answer: str
    composer: str
    sources: list[Citation]
    session_id: str | None = None
    last_seq: int | None = None


class TurnOut(BaseModel):
    region: str
    session_id: str
    reply: str
    sources: list[str]
    confirmed: list[str]
    handoff: bool
    last_seq: int
    events: int
    citations: list[Citation] = []


class TurnView(BaseModel):
    seq: int
    role: str
    text: str
    ts_ms: int
    sources: list[str]


class ToolCallView(BaseModel):
    seq: int
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


class SessionOut(BaseModel):
    region: str
    session_id: str
    status: str
    intent: str | None
    slots: dict[str, Any]
    last_seq: int
    turns: list[TurnView]
    tool_calls: list[ToolCallView]
    confirmed: list[str]
    handoff_reason: str | None
    origin: str


class Check(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool


class Readiness(BaseModel):
    region: str
    ready: bool
    role: str
    checks: dict[str, Check]


class Health(BaseModel):
    status: str
    region: str


class Promoted(BaseModel):
    region: str
    active: str
    epoch: int
    previous: str | None
    changed: bool
    published: bool  # the promotion is on this region's control topic (else it is published later)
    # Per other region and partition of its dialog topic: the first source offset this region had
    # not received; that region's older-epoch turns from there on are set aside (dialog/fence.py).
    cut: dict[str, dict[str, int]]
    dialog_positions: dict[str, int]
    # How long each step took: the lag check, the flip of the active-region row (including any wait
    # for a turn in flight elsewhere, and a fence), a turn of this region in flight, the catch-up.
    seconds: dict[str, float] = {}


class Conflicts(BaseModel):
    """Turns an old active region accepted that the promoted region never received (written after
    the promotion, or not replicated before the old region was lost): folded nowhere, listed here
    with the whole event, the same list in every region."""

    region: str
    count: int
    fenced: list[dict[str, Any]]


SlotValue = Annotated[str, Field(max_length=200)] | bool | Annotated[int, Field(ge=-(2**53), le=2**53)] | None


def create_app(service: RegionService) -> FastAPI:
    settings = service.settings
    region = service.region
    max_chars = settings.query_max_chars

    class AskRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: str = Field(min_length=1, max_length=max_chars)
        k: int = Field(default=5, ge=1, le=settings.search_max_k)
        session_id: str | None = Field(default=None, pattern=SESSION_ID)

        _clean = field_validator("question")(_clean_text)

    class TurnRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: str = Field(min_length=1, max_length=max_chars)
        intent: str | None = Field(default=None, pattern=INTENT)
        slots: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], SlotValue] = Field(
            default_factory=dict, max_length=20
        )
        channel: str = Field(default="", max_length=64)
        customer_id: str = Field(default="", max_length=128)
        locale: str = Field(default="", max_length=35)

        _clean = field_validator("text")(_clean_text)

    refusals: dict[int | str, dict[str, Any]] = {
        409: {"model": Refused, "description": "this region is standby"},
        503: {"model": Error, "description": "the region cannot serve this right now (retry)"},
    }
    app = FastAPI(
        title=f"regionsync region service ({region})",
        version="1",
        description="Health, search and answers with sources, dialog turns, promotion and metrics of one region.",
    )
    metrics = ServiceMetrics(region, service.readings,
                             answer_outcomes=service.chat.outcomes if service.chat is not None else None)
    app.state.service = service

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe(template, request.method, status, time.perf_counter() - started)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # a body that is not UTF-8 JSON: answer like every other bad input
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"],
                                             "msg": f"malformed request body: {exc.detail}", "input": None}]},
                                status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(NotActive)
    async def _not_active(_request: Request, exc: NotActive) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "active_region": exc.active}, status_code=409)

    @app.exception_handler(UnknownSession)
    async def _unknown(_request: Request, exc: UnknownSession) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(NotCaughtUp)
    async def _behind(_request: Request, exc: NotCaughtUp) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(IndexerError)
    async def _index_down(_request: Request, exc: IndexerError) -> JSONResponse:
        log.warning("region %s index: %s", region, exc)
        return JSONResponse({"detail": f"region {region}'s index is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(DialogError)
    async def _dialog_down(_request: Request, exc: DialogError) -> JSONResponse:
        # The broker did not acknowledge the turn's events: nothing of it was answered (retry).
        log.warning("region %s dialog log: %s", region, exc)
        return JSONResponse({"detail": f"region {region}'s dialog log did not take this turn: {exc}"},
                            status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(ServeError)
    async def _serve_error(_request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # What the region depends on failed for a moment: a 503 the client retries, never a 500.
    # Seen under the fault suite: a broker that came back empty did not acknowledge a turn's
    # events (DeliveryError), a restarting Postgres refused the active-region row.
    @app.exception_handler(DeliveryError)
    async def _not_stored(_request: Request, exc: DeliveryError) -> JSONResponse:
        log.warning("region %s: turn not stored: %s", region, exc)
        return JSONResponse({"detail": f"the turn was not stored (the log did not acknowledge it; nothing of it "
                                       f"was kept): {exc}; try again"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("region %s: database unavailable: %s", region, exc)
        return JSONResponse({"detail": f"region {region}'s database is unavailable; try again"}, status_code=503,
                            headers={"Retry-After": "1"})

    # Probes run on the event loop (async), not in the request thread pool: turns waiting for a
    # catch-up can fill the pool, and a probe must still answer within its timeout. Readiness is
    # computed in the background (serve/region.py); this only reads it.
    @app.get("/healthz", response_model=Health, summary="the process answers")
    async def healthz() -> Health:
        return Health(status="ok", region=region)

    @app.get(
        "/readyz", response_model=Readiness, summary="this region can serve now; its role",
        responses={503: {"model": Readiness, "description": "not ready (see checks)"}},
    )
    async def readyz(response: Response) -> dict[str, Any]:
        report = service.readiness()
        if not report["ready"]:
            response.status_code = 503
        return report

    @app.get("/search", response_model=SearchResponse, summary="nearest chunks in this region", responses=refusals)
    def search(
        q: Annotated[str, Query(min_length=1, max_length=max_chars, description="the query text")],
        k: Annotated[int, Query(ge=1, le=settings.search_max_k)] = 5,
    ) -> SearchResponse:
        query = _query(q)
        hits = service.search(query, k)
        return SearchResponse(region=region, query=query, hits=[_hit(h) for h in hits])

    @app.post("/ask", response_model=AskResponse, summary="an answer citing this region's sources", responses=refusals)
    def ask(body: AskRequest) -> AskResponse:
        if body.session_id is None:
            composed = service.answer(body.question, body.k)
            return _ask_response(region, body.question, composed)
        result = service.turn(body.session_id, {"text": body.question, "intent": "knowledge"})
        composed = result.answer or Composed(result.reply.text, (), "handler")
        return _ask_response(region, body.question, composed, body.session_id, result.reply.last_seq)

    @app.post(
        "/sessions/{session_id}/turns", response_model=TurnOut, summary="one customer message: a dialog turn",
        responses=refusals,
    )
    def turn(session_id: Annotated[str, Path(pattern=SESSION_ID)], body: TurnRequest) -> TurnOut:
        result = service.turn(session_id, body.model_dump())
        reply = result.reply
        cited = result.answer.cited if result.answer else ()
        return TurnOut(
            region=region, session_id=session_id, reply=reply.text, sources=list(reply.sources),
            confirmed=list(reply.confirmed), handoff=reply.handoff, last_seq=reply.last_seq, events=reply.events,
            citations=[_citation(n, h) for n, h in enumerate(cited, 1)],
        )

    @app.get(
        "/sessions/{session_id}", response_model=SessionOut, summary="a session's state in this region",
        responses={404: {"model": Error, "description": "unknown session"}, 503: refusals[503]},
    )
    def get_session(session_id: Annotated[str, Path(pattern=SESSION_ID)]) -> SessionOut:
        state = service.session(session_id)
        data = state.to_dict()
        return SessionOut(region=region, **{k: data[k] for k in SessionOut.model_fields if k != "region"})

    @app.post(
        "/admin/promote", response_model=Promoted, summary="make this region the active one (admin token)",
        responses={401: {"model": Error}, 403: {"model": Error}, 503: refusals[503]},
    )
    def promote(
        x_admin_token: Annotated[str | None, Header(max_length=512)] = None,
        force: Annotated[bool, Query(description="promote even while the copy of the active region's log lags "
                                                 "a source that answers (what is not copied is set aside)")] = False,
    ) -> Any:
        refused = _admin_refusal(x_admin_token)
        if refused is not None:
            return refused
        return service.promote(force=force)

    @app.get(
        "/admin/conflicts", response_model=Conflicts, summary="turns a promotion set aside (admin token)",
        responses={401: {"model": Error}, 403: {"model": Error}, 503: refusals[503]},
    )
    def conflicts(x_admin_token: Annotated[str | None, Header(max_length=512)] = None) -> Any:
        refused = _admin_refusal(x_admin_token)
        if refused is not None:
            return refused
        report = service.fenced_report()
        return Conflicts(region=region, count=len(report), fenced=report)

    def _admin_refusal(token: str | None) -> JSONResponse | None:
        expected = settings.admin_token.get_secret_value()
        if not token:
            return JSONResponse({"detail": "missing X-Admin-Token header"}, status_code=401)
        if not expected or not secrets.compare_digest(token.encode(), expected.encode()):
            return JSONResponse({"detail": "bad admin token"}, status_code=403)
        return None

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _query(q: str) -> str:
    from fastapi.exceptions import RequestValidationError

    try:
        return _clean_text(q)
    except ValueError as exc:
        # The same body as every other 422 (the spec's HTTPValidationError).
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "q"), "msg": f"Value error, {exc}", "input": q}]
        ) from exc


def _source(hit: Hit) -> Source:
    src = hit.source or {}
    return Source(**{k: src.get(k) for k in Source.model_fields})


def _hit(hit: Hit) -> SearchHit:
    return SearchHit(
        doc_id=hit.doc_id, chunk=hit.chunk_index, title=hit.title, text=hit.text, score=hit.score,
        version=hit.version, tags=list(hit.tags), source=_source(hit),
    )


def _citation(n: int, hit: Hit) -> Citation:
    return Citation(n=n, label=source_label(hit), doc_id=hit.doc_id, chunk=hit.chunk_index, title=hit.title,
                    score=hit.score, version=hit.version, source=_source(hit))


def _ask_response(
    region: str, question: str, composed: Composed, session_id: str | None = None, last_seq: int | None = None
) -> AskResponse:
    return AskResponse(
        region=region, question=question, answer=composed.text, composer=composed.composer,
        sources=[_citation(n, h) for n, h in enumerate(composed.cited, 1)], session_id=session_id, last_seq=last_seq,
    )
