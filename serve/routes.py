"""The region service's routes, one router per concern: probes, knowledge (search and answers),
dialog (turns and sessions), admin (promotion and conflicts), metrics. Each router closes over the
region's :class:`~serve.region.RegionService`; the request models whose limits come from the
settings are defined with their routes. Knowledge and dialog need an ``assistant`` bearer token,
admin an ``operator`` one (serve/auth.py); probes and metrics are open."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.answers import Composed
from serve.auth import ASSISTANT, OPERATOR, Caller, TokenBook
from serve.errors import Forbidden, Unauthenticated
from serve.metrics import ServiceMetrics
from serve.region import RegionService
from serve.schemas import (
    INTENT,
    SESSION_ID,
    AskResponse,
    Conflicts,
    Erased,
    Error,
    Health,
    Promoted,
    Readiness,
    Refused,
    SearchResponse,
    SessionOut,
    SlotValue,
    TurnOut,
    ask_response,
    citation,
    clean_text,
    search_hit,
)

REFUSALS: dict[int | str, dict[str, Any]] = {
    409: {"model": Refused, "description": "this region is standby"},
    503: {"model": Error, "description": "the region cannot serve this right now (retry)"},
}
GONE: dict[int | str, dict[str, Any]] = {410: {"model": Error, "description": "the session was erased"}}
AUTH_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "no bearer token, or an unknown one"},
    403: {"model": Error, "description": "the token's role may not do this"},
}

audit = logging.getLogger("regionsync.audit")
_bearer = HTTPBearer(auto_error=False, description="a token of the role the endpoint names (serve/auth.py)")


def requires(book: TokenBook, role: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that lets through callers of ``role`` only (async: no request thread is taken)."""

    async def check(request: Request,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Caller:
        if creds is None:
            problem: Unauthenticated | Forbidden = Unauthenticated(
                "missing bearer token: send 'Authorization: Bearer <token>'")
        else:
            caller = book.identify(creds.credentials)
            if caller is not None and caller.role == role:
                return caller
            problem = (Unauthenticated("unknown bearer token") if caller is None
                       else Forbidden(f"{request.url.path} needs the {role} role; this token's role is {caller.role}"))
        if role == OPERATOR:
            audit.warning("refused %s %s from %s: %s", request.method, request.url.path,
                          request.client.host if request.client else "?", problem)
        raise problem

    return check


def probes(service: RegionService) -> APIRouter:
    router = APIRouter()

    # Probes run on the event loop (async), not in the request thread pool: turns waiting for a
    # catch-up can fill the pool, and a probe must still answer within its timeout. Readiness is
    # computed in the background (serve/region.py); this only reads it.
    @router.get("/healthz", response_model=Health, summary="the process answers")
    async def healthz() -> Health:
        return Health(status="ok", region=service.region)

    @router.get(
        "/readyz", response_model=Readiness, summary="this region can serve now; its role",
        responses={503: {"model": Readiness, "description": "not ready (see checks)"}},
    )
    async def readyz(response: Response) -> dict[str, Any]:
        report = service.readiness()
        if not report["ready"]:
            response.status_code = 503
        return report

    return router


def knowledge(service: RegionService, book: TokenBook) -> APIRouter:
    router = APIRouter(dependencies=[Depends(requires(book, ASSISTANT))], responses=AUTH_REFUSALS)
    settings, region = service.settings, service.region
    max_chars = settings.query_max_chars

    class AskRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: str = Field(min_length=1, max_length=max_chars)
        k: int = Field(default=5, ge=1, le=settings.search_max_k)
        session_id: str | None = Field(default=None, pattern=SESSION_ID)

        _clean = field_validator("question")(clean_text)

    @router.get("/search", response_model=SearchResponse, summary="nearest chunks in this region", responses=REFUSALS)
    def search(
        q: Annotated[str, Query(min_length=1, max_length=max_chars, description="the query text")],
        k: Annotated[int, Query(ge=1, le=settings.search_max_k)] = 5,
    ) -> SearchResponse:
        query = _query(q)
        hits = service.search(query, k)
        return SearchResponse(region=region, query=query, hits=[search_hit(h) for h in hits])

    @router.post("/ask", response_model=AskResponse, summary="an answer citing this region's sources",
                 responses={**REFUSALS, **GONE})
    def ask(body: AskRequest) -> AskResponse:
        if body.session_id is None:
            composed = service.answer(body.question, body.k)
            return ask_response(region, body.question, composed)
        result = service.turn(body.session_id, {"text": body.question, "intent": "knowledge"})
        composed = result.answer or Composed(result.reply.text, (), "handler")
        return ask_response(region, body.question, composed, body.session_id, result.reply.last_seq)

    return router


def dialog(service: RegionService, book: TokenBook) -> APIRouter:
    router = APIRouter(dependencies=[Depends(requires(book, ASSISTANT))], responses=AUTH_REFUSALS)
    region, max_chars = service.region, service.settings.query_max_chars

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

        _clean = field_validator("text")(clean_text)

    @router.post(
        "/sessions/{session_id}/turns", response_model=TurnOut, summary="one customer message: a dialog turn",
        responses={**REFUSALS, **GONE},
    )
    def turn(session_id: Annotated[str, Path(pattern=SESSION_ID)], body: TurnRequest) -> TurnOut:
        result = service.turn(session_id, body.model_dump())
        reply = result.reply
        cited = result.answer.cited if result.answer else ()
        return TurnOut(
            region=region, session_id=session_id, reply=reply.text, sources=list(reply.sources),
            confirmed=list(reply.confirmed), handoff=reply.handoff, last_seq=reply.last_seq, events=reply.events,
            citations=[citation(n, h) for n, h in enumerate(cited, 1)],
        )

    @router.get(
        "/sessions/{session_id}", response_model=SessionOut, summary="a session's state in this region",
        responses={404: {"model": Error, "description": "unknown session"}, 503: REFUSALS[503]},
    )
    def get_session(session_id: Annotated[str, Path(pattern=SESSION_ID)]) -> SessionOut:
        state = service.session(session_id)
        data = state.to_dict()
        return SessionOut(region=region, **{k: data[k] for k in SessionOut.model_fields if k != "region"})

    return router


def admin(service: RegionService, book: TokenBook) -> APIRouter:
    router = APIRouter(responses={**AUTH_REFUSALS, 503: REFUSALS[503]})
    operator = Annotated[Caller, Depends(requires(book, OPERATOR))]

    def audited(caller: Caller, action: str, run: Callable[[], Any]) -> Any:
        """Run an admin action and write its audit line: who (role and token entry, never the
        token), what, where, and how it ended."""
        try:
            result = run()
        except Exception as exc:
            audit.warning("region %s: %s by %s (%s) failed: %s", service.region, action, caller.role, caller.where,
                          type(exc).__name__)
            raise
        audit.info("region %s: %s by %s (%s) done", service.region, action, caller.role, caller.where)
        return result

    @router.post("/admin/promote", response_model=Promoted, summary="make this region the active one (operator)")
    def promote(
        caller: operator,
        force: Annotated[bool, Query(description="promote even while the copy of the active region's log lags "
                                                 "a source that answers (what is not copied is set aside)")] = False,
    ) -> Any:
        return audited(caller, f"promote (force={force})", lambda: service.promote(force=force))

    @router.post("/admin/sessions/{session_id}/erase", response_model=Erased, responses=REFUSALS,
                 summary="erase a customer's conversation in every region (operator)")
    def erase(
        caller: operator,
        session_id: Annotated[str, Path(pattern=SESSION_ID)],
        reason: Annotated[str, Query(max_length=200, pattern=r"^[A-Za-z0-9 ._:#/-]*$",
                                     description="a ticket reference (kept in clear in the log: no personal data)")] = "",
    ) -> Any:
        return audited(caller, f"erase session {session_id}", lambda: service.erase(session_id, reason))

    @router.get("/admin/conflicts", response_model=Conflicts, summary="turns a promotion set aside (operator)")
    def conflicts(caller: operator) -> Any:
        report = audited(caller, "read the conflict report", service.fenced_report)
        return Conflicts(region=service.region, count=len(report), fenced=report)

    return router


def metrics(registry_of: ServiceMetrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics_endpoint() -> Response:
        return Response(generate_latest(registry_of.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _query(q: str) -> str:
    try:
        return clean_text(q)
    except ValueError as exc:
        # The same body as every other 422 (the spec's HTTPValidationError).
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "q"), "msg": f"Value error, {exc}", "input": q}]
        ) from exc
