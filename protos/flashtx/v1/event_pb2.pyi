from flashtx.protos.flashtx.v1 import order_pb2 as _order_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockChange(_message.Message):
    __slots__ = ("sku_id", "delta", "reason")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    delta: int
    reason: str
    def __init__(self, sku_id: _Optional[str] = ..., delta: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "merchant_id", "type", "order_id", "sequence", "created_at_ms", "order", "stock")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    merchant_id: str
    type: str
    order_id: str
    sequence: int
    created_at_ms: int
    order: _order_pb2.Order
    stock: StockChange
    def __init__(self, event_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., type: _Optional[str] = ..., order_id: _Optional[str] = ..., sequence: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., order: _Optional[_Union[_order_pb2.Order, _Mapping]] = ..., stock: _Optional[_Union[StockChange, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("types", "cursor")
    TYPES_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[str]
    cursor: str
    def __init__(self, types: _Optional[_Iterable[str]] = ..., cursor: _Optional[str] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event", "cursor")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    event: Event
    cursor: str
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...
