from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ResultCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_CODE_UNSPECIFIED: _ClassVar[ResultCode]
    RESULT_CODE_OK: _ClassVar[ResultCode]
    RESULT_CODE_REPLAYED: _ClassVar[ResultCode]
    RESULT_CODE_OUT_OF_STOCK: _ClassVar[ResultCode]
    RESULT_CODE_LIMIT_EXCEEDED: _ClassVar[ResultCode]
    RESULT_CODE_IDEMPOTENCY_CONFLICT: _ClassVar[ResultCode]
    RESULT_CODE_INVALID_ARGUMENT: _ClassVar[ResultCode]
    RESULT_CODE_NOT_FOUND: _ClassVar[ResultCode]
    RESULT_CODE_OVERLOADED: _ClassVar[ResultCode]
    RESULT_CODE_UNAVAILABLE: _ClassVar[ResultCode]
    RESULT_CODE_FAILED_PRECONDITION: _ClassVar[ResultCode]

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_CHANNEL: _ClassVar[Scope]
    SCOPE_SAAS: _ClassVar[Scope]
    SCOPE_ADMIN: _ClassVar[Scope]

class ReadConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_CONSISTENCY_UNSPECIFIED: _ClassVar[ReadConsistency]
    READ_CONSISTENCY_SNAPSHOT: _ClassVar[ReadConsistency]
    READ_CONSISTENCY_STRONG: _ClassVar[ReadConsistency]
RESULT_CODE_UNSPECIFIED: ResultCode
RESULT_CODE_OK: ResultCode
RESULT_CODE_REPLAYED: ResultCode
RESULT_CODE_OUT_OF_STOCK: ResultCode
RESULT_CODE_LIMIT_EXCEEDED: ResultCode
RESULT_CODE_IDEMPOTENCY_CONFLICT: ResultCode
RESULT_CODE_INVALID_ARGUMENT: ResultCode
RESULT_CODE_NOT_FOUND: ResultCode
RESULT_CODE_OVERLOADED: ResultCode
RESULT_CODE_UNAVAILABLE: ResultCode
RESULT_CODE_FAILED_PRECONDITION: ResultCode
SCOPE_UNSPECIFIED: Scope
SCOPE_CHANNEL: Scope
SCOPE_SAAS: Scope
SCOPE_ADMIN: Scope
READ_CONSISTENCY_UNSPECIFIED: ReadConsistency
READ_CONSISTENCY_SNAPSHOT: ReadConsistency
READ_CONSISTENCY_STRONG: ReadConsistency

class ErrorMetadata(_message.Message):
    __slots__ = ("entries",)
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[str, str]
    def __init__(self, entries: _Optional[_Mapping[str, str]] = ...) -> None: ...
