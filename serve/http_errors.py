"""The one mapping from what went wrong to an HTTP answer: bad input is a 4xx with a message, a
dependency that failed for a moment a 503 the client retries (with ``Retry-After`` where a retry
soon is likely to work), never a 500."""

import logging

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dialog.errors import DeliveryError, DialogError
from dialog.keys import SessionIsErased
from indexer.errors import IndexerError
from serve.errors import Forbidden, NotActive, NotCaughtUp, ServeError, Unauthenticated, UnknownSession

log = logging.getLogger(__name__)


def install(app: FastAPI, region: str) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # a body that is not UTF-8 JSON: answer like every other bad input
            return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"],
                                             "msg": f"malformed request body: {exc.detail}", "input": None}]},
                                status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_request: Request, exc: Unauthenticated) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(NotActive)
    async def _not_active(_request: Request, exc: NotActive) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "active_region": exc.active}, status_code=409)

    @app.exception_handler(UnknownSession)
    async def _unknown(_request: Request, exc: UnknownSession) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SessionIsErased)
    async def _erased(_request: Request, exc: SessionIsErased) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

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
