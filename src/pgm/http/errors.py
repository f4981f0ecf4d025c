"""One JSON error shape for every error the service answers (docs/api.md), and the one table from the
services' refusals and the providers' errors to the status and code a client sees (`REFUSALS`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgm.http.responses import JSONResponse
from pgm.providers.base import InvalidProviderData, NotSupported, OutcomeUnknown, ProviderRejected
from pgm.services.callbacks import CallbackNotProcessed, CallbackRefusedByProvider, CallbackRejected
from pgm.services.policy import IdempotencyConflict, NotOffered, ProviderNotFound, RequestRefused

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The error shape: status, machine-readable code, human message, and the offending field."""

    statusCode: int = Field(examples=[400])  # noqa: N815 - wire names follow the existing PGM
    error: str = Field(examples=["Bad Request"])
    code: str = Field(examples=["invalid_request"])
    message: str = Field(examples=["amount: must be greater than zero"])
    field: str | None = Field(default=None, examples=["amount"])
    requestId: str | None = Field(default=None, examples=["5f0c6f0e6d0b4a7e9d3f2c1b0a987654"])  # noqa: N815


class ApiError(Exception):
    """An error answered with the error shape."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Refusal:
    """How the API answers an exception: its status and code, the exception's message after `prefix`."""

    status_code: int
    code: str
    prefix: str = ""

    def error(self, exc: Exception) -> ApiError:
        """The API error for `exc` (naming its field when it has one)."""
        return ApiError(self.status_code, self.code, self.prefix + str(exc), getattr(exc, "field", None))


# Every refusal of the services (services/policy.py, services/callbacks.py) and every provider error that
# reaches a route, answered by one handler: routes raise or let through, and never choose a status.
# Looked up along the exception's classes, most specific first. The codes are docs/api.md's table.
REFUSALS: dict[type[Exception], Refusal] = {
    RequestRefused: Refusal(400, "invalid_request"),
    InvalidProviderData: Refusal(400, "invalid_request"),
    ProviderNotFound: Refusal(404, "provider_not_found"),
    # A provider refusing a lookup: it does not know the payment or subscription.
    ProviderRejected: Refusal(404, "not_found"),
    IdempotencyConflict: Refusal(409, "idempotency_conflict"),
    NotOffered: Refusal(501, "not_supported"),
    NotSupported: Refusal(501, "not_supported"),
    OutcomeUnknown: Refusal(502, "provider_unavailable"),
    CallbackRejected: Refusal(401, "invalid_signature", "callback rejected: "),
    CallbackRefusedByProvider: Refusal(502, "provider_rejected", "callback refused by provider "),
    CallbackNotProcessed: Refusal(503, "callback_not_processed", "callback not processed, deliver it again: "),
}
# The provider-specific utilities (http/routes/braintree.py, axerve.py) are not lookups: the provider
# refusing one refuses the input the client sent.
UTILITY_REJECTED = Refusal(422, "provider_rejected")


def refusal_for(exc: Exception) -> Refusal | None:
    """The table's entry for `exc`, or None when it is not a refusal (then it is a failure: 500)."""
    for kind in type(exc).__mro__:
        if kind in REFUSALS:
            return REFUSALS[kind]
    return None


def error_response(
    request: Request | None, status_code: int, code: str, message: str, field: str | None = None
) -> JSONResponse:
    """Render the error shape."""
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    body = ErrorBody(
        statusCode=status_code,
        error=HTTPStatus(status_code).phrase,
        code=code,
        message=message,
        field=field,
        requestId=request_id,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code)


def _field_path(location: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    field = _field_path(error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "json_invalid":
        return "the request body is not valid JSON", None
    if kind == "missing":
        return (f"{field} is required", field) if field else ("the request body is required", None)
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    if kind in ("model_attributes_type", "dict_type") and field is None:
        return "the request body must be a JSON object", None
    return (f"{field}: {message}" if field else message), field


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.code, exc.message, exc.field)

    async def _refused(request: Request, exc: Exception) -> JSONResponse:
        refusal = refusal_for(exc)
        assert refusal is not None  # registered only for the table's exceptions
        return await _api_error(request, refusal.error(exc))

    for kind in REFUSALS:
        app.add_exception_handler(kind, _refused)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message, field = _validation_message(errors[0]) if errors else ("the request is invalid", None)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_response(request, 400, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: "invalid_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            401: "unauthorized",
        }
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        response = error_response(request, exc.status_code, codes.get(exc.status_code, "http_error"), detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace or an internal message to the client: it goes to the log only.
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(request, 500, "internal_error", "the service failed to handle this request")
