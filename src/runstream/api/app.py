"""The FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream import __version__
from runstream.api import jobs, stream
from runstream.api.pacing import YieldBetweenEvents
from runstream.api.services import Services, get_services
from runstream.core.errors import JobNotFound, ReaderConflict, TransportUnavailable
from runstream.core.redis_client import connect_redis, masked_url
from runstream.core.settings import Settings
from runstream.core.transport import open_transport
from runstream.migrate.compat import health_report
from runstream.worker.queue import JobQueue

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


def create_app(settings: Settings, redis: Redis | None = None) -> FastAPI:
    """The API for `settings`. With `redis` given (fakeredis in tests) it is used, not closed."""
    app = FastAPI(title="runstream", version=__version__, lifespan=_lifespan(settings, redis))
    app.include_router(jobs.router)
    app.include_router(stream.router)
    app.add_middleware(YieldBetweenEvents)
    app.add_api_route("/healthz", healthz, methods=["GET"], response_model=None)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(JobNotFound, _error_status(404))
    app.add_exception_handler(ReaderConflict, _error_status(409))
    app.add_exception_handler(TransportUnavailable, _error_status(503))
    app.add_exception_handler(RedisError, _redis_error)
    return app


def _lifespan(settings: Settings, redis: Redis | None) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis if redis is not None else connect_redis(settings)
        transport = open_transport(settings, client)
        app.state.services = Services(settings, client, transport, JobQueue(client, settings))
        logger.info(
            "API using backend %s, Redis %s",
            settings.backend_name,
            masked_url(settings.redis_url),
        )
        try:
            yield
        finally:
            await transport.aclose()
            if redis is None:
                await client.aclose()

    return lifespan


async def healthz(services: Annotated[Services, Depends(get_services)]) -> JSONResponse:
    backend = services.settings.backend_name
    try:
        await asyncio.wait_for(services.redis.ping(), HEALTH_TIMEOUT_SECONDS)
    except (RedisError, OSError, TimeoutError) as err:
        logger.warning("healthz: Redis does not answer: %s", err)
        content = {"redis": "error", "backend": backend, "detail": str(err) or type(err).__name__}
        return JSONResponse(content, status_code=503)
    workers = await health_report(services.redis, services.settings)
    return JSONResponse({"redis": "ok", "backend": backend, **workers})


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = jsonable_encoder(exc.errors()) if isinstance(exc, RequestValidationError) else []
    message = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors
    )
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    where = f"{request.method} {request.url.path}"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        logger.warning("%s: Redis does not answer: %r", where, exc)
        detail = f"Redis is unavailable ({type(exc).__name__}: {exc}); retry shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
    logger.error("%s: Redis answered with an error: %r", where, exc)
    detail = f"Redis answered with an error ({type(exc).__name__}: {exc})"
    return JSONResponse({"detail": detail}, status_code=500)


def _error_status(status_code: int) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_code)

    return handler
