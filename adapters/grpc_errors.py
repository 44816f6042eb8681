"""The one place where failures become gRPC statuses, and where keys and scopes are
checked: an interceptor around every flashtx.v1 method.

    domain error              gRPC status            details
    InvalidArgument           INVALID_ARGUMENT       ErrorInfo, BadRequest(field)
    NotFound                  NOT_FOUND              ErrorInfo
    FailedPrecondition (+sub) FAILED_PRECONDITION    ErrorInfo (OUT_OF_STOCK, ...),
                                                     PreconditionFailure
    IdempotencyConflict       ALREADY_EXISTS         ErrorInfo
    AlreadyExists             ALREADY_EXISTS         ErrorInfo
    Unauthenticated           UNAUTHENTICATED        ErrorInfo
    PermissionDenied          PERMISSION_DENIED      ErrorInfo
    Overloaded                RESOURCE_EXHAUSTED     ErrorInfo, RetryInfo
    Unavailable               UNAVAILABLE            ErrorInfo, RetryInfo
    anything else             INTERNAL               (logged; no internals leak)
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from flashtx.engine import errors
from flashtx.engine.merchants import Principal, Scope

log = logging.getLogger(__name__)

DOMAIN = "flashtx.dev"

_STATUS: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
]

# Scope each RPC needs. Methods absent here (health, reflection) need no key.
SCOPES: dict[str, Scope] = {
    "/flashtx.v1.MerchantService/CreateMerchant": Scope.OPERATOR,
    "/flashtx.v1.MerchantService/ListMerchants": Scope.OPERATOR,
    "/flashtx.v1.MerchantService/GetMerchant": Scope.ADMIN,
    "/flashtx.v1.MerchantService/CreateApiKey": Scope.ADMIN,
    "/flashtx.v1.MerchantService/RevokeApiKey": Scope.ADMIN,
    "/flashtx.v1.StockService/UpsertSkus": Scope.ADMIN,
    "/flashtx.v1.StockService/AdjustStock": Scope.ADMIN,
    "/flashtx.v1.StockService/GetStock": Scope.CHANNEL,
    "/flashtx.v1.StockService/GetStockLevels": Scope.CHANNEL,
    "/flashtx.v1.OrderService/PlaceOrder": Scope.CHANNEL,
    "/flashtx.v1.OrderService/PlaceOrders": Scope.CHANNEL,
    "/flashtx.v1.OrderService/PlaceOrderColumns": Scope.CHANNEL,
    "/flashtx.v1.OrderService/GetOrder": Scope.CHANNEL,
    "/flashtx.v1.OrderService/ListOrders": Scope.CHANNEL,
    "/flashtx.v1.OrderService/CancelOrder": Scope.CHANNEL,
    "/flashtx.v1.OrderService/PayOrder": Scope.SAAS,
    "/flashtx.v1.OrderService/FulfillOrder": Scope.SAAS,
    "/flashtx.v1.EventService/WatchEvents": Scope.SAAS,
    "/flashtx.v1.MerchantService/UpdateMerchant": Scope.ADMIN,
    "/flashtx.v1.CartService/AddItem": Scope.CHANNEL,
    "/flashtx.v1.CartService/UpdateQuantity": Scope.CHANNEL,
    "/flashtx.v1.CartService/RemoveItem": Scope.CHANNEL,
    "/flashtx.v1.CartService/GetCart": Scope.CHANNEL,
    "/flashtx.v1.CartService/ClearCart": Scope.CHANNEL,
    "/flashtx.v1.CartService/Checkout": Scope.CHANNEL,
    "/flashtx.v1.CampaignService/CreateCampaign": Scope.ADMIN,
    "/flashtx.v1.CampaignService/EndCampaign": Scope.ADMIN,
    "/flashtx.v1.CampaignService/GetCampaign": Scope.CHANNEL,
    "/flashtx.v1.CampaignService/ListCampaigns": Scope.CHANNEL,
}
# Reads a SaaS key may make besides its own scope's calls.
SAAS_ALSO = {"/flashtx.v1.StockService/GetStock", "/flashtx.v1.StockService/GetStockLevels",
             "/flashtx.v1.OrderService/GetOrder", "/flashtx.v1.OrderService/ListOrders",
             "/flashtx.v1.CampaignService/GetCampaign",
             "/flashtx.v1.CampaignService/ListCampaigns"}

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The caller of the RPC being served (set by the interceptor)."""
    return _principal.get()


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.DomainError) -> _Status:
    code = status_code_of(error)
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN,
                                           metadata=error.metadata)]
    if isinstance(error, errors.InvalidArgument):
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field,
                                                        description=error.description)]))
    if isinstance(error, errors.FailedPrecondition):
        details.append(error_details_pb2.PreconditionFailure(violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=error.reason, subject=_subject(error.metadata),
                description=error.message)]))
    if isinstance(error, errors.Overloaded | errors.Unavailable):
        retry_ms = getattr(error, "retry_after_ms", 50)
        details.append(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=retry_ms // 1000, nanos=(retry_ms % 1000) * 1_000_000)))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message,
                               details=packed)
    converted = rpc_status.to_status(status)
    if isinstance(error, errors.Overloaded | errors.Unavailable):
        # gRPC's own retries (a client's service config) wait this long (gRFC A6).
        pushback = (("grpc-retry-pushback-ms", str(getattr(error, "retry_after_ms", 50))),)
        return _Status(converted.code, converted.details,
                       (*converted.trailing_metadata, *pushback))
    return _Status(converted.code, converted.details, tuple(converted.trailing_metadata))


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _subject(metadata: dict[str, str]) -> str:
    """What a precondition is about, as PreconditionFailure names it: "sku:<id>",
    "campaign:<id>", "order:<id>" (the first that applies), or ""."""
    for key, kind in (("sku_id", "sku"), ("campaign_id", "campaign"), ("order_id", "order")):
        if metadata.get(key):
            return f"{kind}:{metadata[key]}"
    return ""


def bearer_token(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes) or not value.startswith("Bearer "):
                raise errors.Unauthenticated("authorization must be 'Bearer <api key>'")
            token: str = value[7:].strip()
            return token
    raise errors.Unauthenticated("missing authorization metadata")


class Malformed:
    """A request whose bytes did not parse: answered INVALID_ARGUMENT, never INTERNAL
    (gRPC's own answer when a deserializer raises)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason[:200]


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data) if deserialize else data
        except Exception as error:  # any parse failure is the caller's bad input
            return Malformed(str(error) or type(error).__name__)

    return parse


def _passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The handler's serializer, except that an answer already serialized (bytes: the
    snapshot reads, see adapters.wire.level_entry) is sent as it is."""
    if serialize is None:
        return None
    encode = serialize

    def serialize_unless_bytes(response: Any) -> bytes:
        return response if isinstance(response, bytes) else encode(response)

    return serialize_unless_bytes


_ID_FIELDS = ("order_id", "idempotency_key", "request_id", "buyer_id", "sku_id",
              "campaign_id")


def _ids(method: str, request: Any) -> dict[str, str]:
    """A log line's fields for a failed call: the method and the ids its request names
    (in JSON logs each is a field of its own)."""
    fields = {"rpc": method}
    for name in _ID_FIELDS:
        value = getattr(request, name, "")
        if value and isinstance(value, str):
            fields[name] = value
    return fields


Authenticate = Callable[[str], Awaitable[Principal]]
Observe = Callable[[str, str, float], None]  # (method, status code name, seconds)


class FlashtxInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, enforces the scope table and maps errors, for every flashtx RPC."""

    def __init__(self, authenticate: Authenticate, observe: Observe | None = None,
                 unary_calls_max: int = 0, retry_after_ms: int = 50) -> None:
        self._authenticate = authenticate
        self._observe = observe or (lambda method, code, seconds: None)
        self._wrapped: dict[str, Any] = {}
        # Unary calls served at once (0: no bound); past it, RESOURCE_EXHAUSTED with a
        # retry hint before anything else is done.
        self._unary_calls_max = unary_calls_max
        self._retry_after_ms = retry_after_ms
        self.unary_calls = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        scope = SCOPES.get(method)
        if handler is None or scope is None:
            return handler
        deserialize = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, scope),
                request_deserializer=deserialize,
                response_serializer=_passing_bytes(handler.response_serializer))
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, scope),
                request_deserializer=deserialize,
                response_serializer=handler.response_serializer)
        else:
            return handler
        # Handlers are the same for every call of a method: build each wrapper once.
        self._wrapped[method] = wrapped
        return wrapped

    async def _admit(self, method: str, scope: Scope, context: Any, request: Any) -> None:
        if isinstance(request, Malformed):
            raise errors.InvalidArgument("request", f"is not a valid message: {request.reason}")
        principal = await self._authenticate(bearer_token(context.invocation_metadata()))
        if not (method in SAAS_ALSO and Scope.SAAS in principal.scopes):
            principal.require(scope)
        _principal.set(principal)

    def _wrap_unary(self, inner: Any, method: str, scope: Scope) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            self.unary_calls += 1
            try:
                if self._unary_calls_max and self.unary_calls > self._unary_calls_max:
                    raise errors.Overloaded("this gateway serves its maximum of concurrent"
                                            " calls", self._retry_after_ms)
                await self._admit(method, scope, context, request)
                response = await inner(request, context)
                self._observe(method, "OK", time.perf_counter() - started)
                return response
            except errors.DomainError as error:
                failure = error
            except Exception:
                log.exception("%s failed", method, extra=_ids(method, request))
                self._observe(method, "INTERNAL", time.perf_counter() - started)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                self.unary_calls -= 1
            status = to_status(failure)
            self._observe(method, status_code_of(failure).name, time.perf_counter() - started)
            await context.abort(status.code, status.details, status.trailing_metadata)

        return handle

    def _wrap_stream(self, inner: Any, method: str, scope: Scope) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            try:
                await self._admit(method, scope, context, request)
                if inspect.isasyncgenfunction(inner):
                    async for response in inner(request, context):
                        await context.write(response)
                else:
                    await inner(request, context)
                return
            except errors.DomainError as error:
                failure = error
            except Exception:
                log.exception("%s failed", method, extra=_ids(method, request))
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            status = to_status(failure)
            trailing = (*status.trailing_metadata,
                        *((("flashtx-resume-cursor", failure.metadata["cursor"]),)
                          if "cursor" in failure.metadata else ()))
            await context.abort(status.code, status.details, trailing)

        return handle
