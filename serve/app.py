"""The region service's HTTP API (FastAPI): the OpenAPI spec at /openapi.json, docs at /docs.

Why FastAPI + uvicorn: request and response models double as validation and as the OpenAPI spec
that schemathesis tests against, and it is what this ecosystem (LangServe, vLLM's OpenAI server)
expects. Endpoints are sync functions: the work (model, Milvus, Postgres, Kafka) is blocking
and runs in the server's thread pool.

Bad input never reaches the region: models reject empty, oversized or non-UTF-8 text, unknown
fields and out-of-range numbers with 422 before anything is written; a turn is written whole or
not at all (the dialog manager publishes a turn's events together and only then answers).
"""

# The routes are in serve/routes.py (one router per concern), the models in serve/schemas.py, the
# mapping of errors to HTTP answers in serve/http_errors.py.
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from serve import http_errors, routes
from serve.auth import TokenBook, TokenConfigError, tokens_path
from serve.metrics import ServiceMetrics
from serve.region import RegionService

log = logging.getLogger(__name__)


def create_app(service: RegionService) -> FastAPI:
    app = FastAPI(
        title=f"regionsync region service ({service.region})",
        version="1",
        description="Health, search and answers with sources, dialog turns, promotion and metrics of one region.",
    )
    metrics = ServiceMetrics(service.region, service.readings,
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

    http_errors.install(app, service.region)
    book = TokenBook(service.settings)
    if not book.roles():
        raise TokenConfigError(f"region {service.region}: no API token configured (REGIONSYNC_API_TOKENS or "
                               f"{tokens_path(service.settings)}): the service would refuse every caller")
    for router in (routes.probes(service), routes.knowledge(service, book), routes.dialog(service, book),
                   routes.admin(service, book), routes.metrics(metrics)):
        app.include_router(router)
    return app
