"""`POST /jobs` and `GET /jobs/{job_id}`: submit a job, ask how it is doing."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runstream.api.services import Services, get_services
from runstream.core.errors import InvalidJobId
from runstream.core.keys import validate_job_id
from runstream.worker.queue import InvalidJobInput

logger = logging.getLogger(__name__)

router = APIRouter()

MAX_PROMPT_CHARS = 32_000
JOB_ID_BYTES = 16  # secrets.token_urlsafe(16): 22 characters of A-Z a-z 0-9 _ -


class JobRequest(BaseModel):
    """The body of `POST /jobs`: a prompt, a graph input, or both.

    `input`, when given, is the graph's input as is; otherwise the graph gets
    `{"prompt": prompt}`. `trace_id` is copied into every event of the job.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, min_length=1, max_length=MAX_PROMPT_CHARS)
    input: dict[str, Any] | None = None
    trace_id: str | None = Field(None, max_length=128)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("must not be blank")
        return prompt

    @model_validator(mode="after")
    def _prompt_or_input(self) -> JobRequest:
        if self.prompt is None and self.input is None:
            raise ValueError("give a prompt or a graph input (or both)")
        return self


class JobAccepted(BaseModel):
    job_id: str
    stream_url: str
    status_url: str


async def read_job_request(request: Request) -> JobRequest:
    """Read the body with a size cap, then validate it; 413 or 422 on bad input."""
    services = get_services(request)
    _check_content_type(request.headers.get("content-type"))
    raw = await _read_capped(request, services.settings.max_body_bytes)
    try:
        job = JobRequest.model_validate_json(raw)
    except ValidationError as err:
        raise RequestValidationError(_body_errors(err)) from err
    bad = next(_non_finite(job.input, ["body", "input"]), None)
    if bad is not None:
        msg = "NaN and infinite numbers are not valid JSON; send a finite number or a string"
        raise RequestValidationError([{"loc": bad, "msg": msg, "type": "finite_number"}])
    return job


def _check_content_type(header: str | None) -> None:
    # No header at all is read as JSON, as FastAPI does; any other media type is refused.
    if header is None:
        return
    media_type = header.partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    # ascii(): a header's non-ASCII bytes arrive decoded as Latin-1; show them escaped.
    raise HTTPException(415, f"Content-Type must be application/json, got {ascii(header[:60])}")


def _non_finite(value: Any, path: list[str | int]) -> Iterator[list[str | int]]:
    """The paths of NaN and infinite numbers in `value` (JSON allows neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, [*path, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, [*path, index])


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)

    # A chunked body has no Content-Length, so the bytes read are counted too.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413, f"request body is larger than {limit} bytes (RUNSTREAM_MAX_BODY_BYTES)"
    )


def _body_errors(err: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *problem["loc"]], "msg": problem["msg"], "type": problem["type"]}
        for problem in err.errors(include_url=False)
    ]


def checked_job_id(job_id: str) -> str:
    """The path's job id, or a 422 naming it."""
    try:
        return validate_job_id(job_id)
    except InvalidJobId as err:
        raise RequestValidationError(
            [{"loc": ["path", "job_id"], "msg": str(err), "type": "value_error"}]
        ) from err


JobId = Annotated[str, Depends(checked_job_id)]


@router.post(
    "/jobs",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": JobRequest.model_json_schema()}},
        }
    },
)
async def submit_job(
    request: Request,
    response: Response,
    body: Annotated[JobRequest, Depends(read_job_request)],
    services: Annotated[Services, Depends(get_services)],
) -> JobAccepted:
    job_id = secrets.token_urlsafe(JOB_ID_BYTES)
    try:
        await services.queue.submit(job_id, body.model_dump(exclude_none=True))
    except InvalidJobInput as err:
        problem = {"loc": ["body"], "msg": str(err), "type": "value_error"}
        raise RequestValidationError([problem]) from err
    logger.info("job %s submitted (%d prompt characters)", job_id, len(body.prompt or ""))

    accepted = JobAccepted(
        job_id=job_id,
        stream_url=request.url_for("stream_job", job_id=job_id).path,
        status_url=request.url_for("job_status", job_id=job_id).path,
    )
    response.headers["Location"] = accepted.status_url
    return accepted


@router.get("/jobs/{job_id}", name="job_status")
async def job_status(
    job_id: JobId, services: Annotated[Services, Depends(get_services)]
) -> dict[str, Any]:
    status = await services.queue.status(job_id)
    if status is None:
        raise HTTPException(404, f"job {job_id!r} not found (never submitted, or expired)")
    return status.to_dict()
