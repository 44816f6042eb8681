"""The one tree of domain errors. Expected failures of a single call are these exceptions;
in batch calls the same failures travel as per-item result codes (``ResultCode``).

    DomainError
    ├── InvalidArgument          bad input; names the field            INVALID_ARGUMENT
    ├── NotFound                 unknown SKU, order, merchant, key      NOT_FOUND
    ├── FailedPrecondition       not possible in the current state      FAILED_PRECONDITION
    │   ├── OutOfStock           not enough available units
    │   ├── LimitExceeded        per-buyer limit of a SKU
    │   └── InvalidTransition    order state machine refuses the step
    ├── IdempotencyConflict      key reused with another payload        ALREADY_EXISTS
    ├── AlreadyExists            e.g. merchant id taken                 ALREADY_EXISTS
    ├── Unauthenticated          no or unknown key                      UNAUTHENTICATED
    ├── PermissionDenied         key lacks the scope                    PERMISSION_DENIED
    ├── Overloaded               refused to protect the engine          RESOURCE_EXHAUSTED
    ├── Unavailable              shard moving or restarting             UNAVAILABLE
    └── OutOfRange               a cursor past what is retained         OUT_OF_RANGE

``InvariantViolation`` is not a DomainError: it is a programmer error, it crashes the
actor, and Ray restarts it from durable state.

The mapping to gRPC status codes lives in adapters/grpc_errors.py, and only there.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "IdempotencyConflict",
    "InvalidArgument",
    "InvalidTransition",
    "InvariantViolation",
    "LimitExceeded",
    "NotFound",
    "OutOfRange",
    "OutOfStock",
    "Overloaded",
    "PermissionDenied",
    "ResultCode",
    "Unauthenticated",
    "Unavailable",
    "Refusal",
    "error_for",
    "explain",
    "invariant",
    "refusal",
]


class ResultCode(IntEnum):
    """Per-item outcome of a batch; numbers equal flashtx.v1.ResultCode."""

    OK = 1
    REPLAYED = 2
    OUT_OF_STOCK = 3
    LIMIT_EXCEEDED = 4
    IDEMPOTENCY_CONFLICT = 5
    INVALID_ARGUMENT = 6
    NOT_FOUND = 7
    OVERLOADED = 8
    UNAVAILABLE = 9
    FAILED_PRECONDITION = 10


class DomainError(Exception):
    """A failure the caller can understand and act on."""

    code = ResultCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keeps metadata when the error crosses a Ray process boundary.
        return (_rebuild, (type(self), self.message, self.metadata))


def _rebuild(kind: type[DomainError], message: str, metadata: dict[str, str]) -> DomainError:
    return kind(message, **metadata)


class InvalidArgument(DomainError):
    code = ResultCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, **metadata: str) -> None:
        super().__init__(f"{field}: {message}", field=field, **metadata)
        self.field = field
        self.description = message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        metadata = {k: v for k, v in self.metadata.items() if k != "field"}
        return (_rebuild_invalid, (self.field, self.description, metadata))


def _rebuild_invalid(field: str, message: str, metadata: dict[str, str]) -> InvalidArgument:
    return InvalidArgument(field, message, **metadata)


class NotFound(DomainError):
    code = ResultCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(DomainError):
    code = ResultCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class OutOfStock(FailedPrecondition):
    code = ResultCode.OUT_OF_STOCK
    reason = "OUT_OF_STOCK"


class LimitExceeded(FailedPrecondition):
    code = ResultCode.LIMIT_EXCEEDED
    reason = "LIMIT_EXCEEDED"


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_TRANSITION"


class IdempotencyConflict(DomainError):
    code = ResultCode.IDEMPOTENCY_CONFLICT
    reason = "IDEMPOTENCY_CONFLICT"


class AlreadyExists(DomainError):
    code = ResultCode.IDEMPOTENCY_CONFLICT
    reason = "ALREADY_EXISTS"


class Unauthenticated(DomainError):
    code = ResultCode.INVALID_ARGUMENT
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = ResultCode.INVALID_ARGUMENT
    reason = "PERMISSION_DENIED"


class Overloaded(DomainError):
    code = ResultCode.OVERLOADED
    reason = "OVERLOADED"

    def __init__(self, message: str, retry_after_ms: int = 50, **metadata: str) -> None:
        super().__init__(message, retry_after_ms=str(retry_after_ms), **metadata)
        self.retry_after_ms = retry_after_ms

    def __reduce__(self):  # type: ignore[no-untyped-def]
        metadata = {k: v for k, v in self.metadata.items() if k != "retry_after_ms"}
        return (_rebuild_overloaded, (self.message, self.retry_after_ms, metadata))


def _rebuild_overloaded(message: str, retry_after_ms: int, metadata: dict[str, str]) -> Overloaded:
    return Overloaded(message, retry_after_ms, **metadata)


class Unavailable(DomainError):
    code = ResultCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class OutOfRange(DomainError):
    """An event cursor older than what is still held: events after it are gone (never a
    silent jump past them). Metadata ``oldest_cursor``: where a resume can start."""

    reason = "CURSOR_EXPIRED"


# Reason strings of per-item failures, for batch results built without raising.
REASON_BY_CODE = {
    ResultCode.OUT_OF_STOCK: OutOfStock.reason,
    ResultCode.LIMIT_EXCEEDED: LimitExceeded.reason,
    ResultCode.IDEMPOTENCY_CONFLICT: IdempotencyConflict.reason,
    ResultCode.INVALID_ARGUMENT: InvalidArgument.reason,
    ResultCode.NOT_FOUND: NotFound.reason,
    ResultCode.OVERLOADED: Overloaded.reason,
    ResultCode.UNAVAILABLE: Unavailable.reason,
    ResultCode.FAILED_PRECONDITION: FailedPrecondition.reason,
}


# A per-item refusal as the hot path answers it: its message and the ErrorInfo metadata
# a client acts on ((key, value) pairs), as a plain tuple: cheap to pickle across actors,
# where an exception object per refused order is not.
Refusal = tuple[str, tuple[tuple[str, str], ...]]


def refusal(message: str, **metadata: str) -> Refusal:
    return (message, tuple(metadata.items()))


def explain(code: ResultCode, value: str | Refusal | DomainError
            ) -> tuple[str, str, dict[str, str]]:
    """(reason, message, metadata) of a per-item answer that is not OK."""
    if isinstance(value, DomainError):
        return value.reason, value.message, value.metadata
    if isinstance(value, tuple):
        return REASON_BY_CODE.get(code, ""), value[0], dict(value[1])
    return REASON_BY_CODE.get(code, ""), value, {}


def error_for(code: ResultCode, value: str | Refusal | DomainError) -> DomainError:
    """The error a per-item result code stands for (to raise it from a single call)."""
    if isinstance(value, DomainError):
        return value
    kinds: dict[ResultCode, type[DomainError]] = {
        ResultCode.OUT_OF_STOCK: OutOfStock, ResultCode.LIMIT_EXCEEDED: LimitExceeded,
        ResultCode.IDEMPOTENCY_CONFLICT: IdempotencyConflict, ResultCode.NOT_FOUND: NotFound,
        ResultCode.OVERLOADED: Overloaded, ResultCode.UNAVAILABLE: Unavailable}
    if isinstance(value, tuple):
        return kinds.get(code, FailedPrecondition)(value[0], **dict(value[1]))
    return kinds.get(code, FailedPrecondition)(value)


class InvariantViolation(AssertionError):
    """A programmer error: state the engine must never reach. Crashes the actor."""


def invariant(condition: bool, message: str) -> None:
    """Like ``assert``, but survives ``python -O``."""
    if not condition:
        raise InvariantViolation(message)
