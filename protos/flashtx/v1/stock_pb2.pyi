from flashtx.protos.flashtx.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sku(_message.Message):
    __slots__ = ("sku_id", "name", "price_minor", "on_hand", "per_buyer_limit")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    PER_BUYER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    name: str
    price_minor: int
    on_hand: int
    per_buyer_limit: int
    def __init__(self, sku_id: _Optional[str] = ..., name: _Optional[str] = ..., price_minor: _Optional[int] = ..., on_hand: _Optional[int] = ..., per_buyer_limit: _Optional[int] = ...) -> None: ...

class StockLevel(_message.Message):
    __slots__ = ("sku_id", "name", "price_minor", "on_hand", "available", "reserved", "sold", "per_buyer_limit", "as_of_ms")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    SOLD_FIELD_NUMBER: _ClassVar[int]
    PER_BUYER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_MS_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    name: str
    price_minor: int
    on_hand: int
    available: int
    reserved: int
    sold: int
    per_buyer_limit: int
    as_of_ms: int
    def __init__(self, sku_id: _Optional[str] = ..., name: _Optional[str] = ..., price_minor: _Optional[int] = ..., on_hand: _Optional[int] = ..., available: _Optional[int] = ..., reserved: _Optional[int] = ..., sold: _Optional[int] = ..., per_buyer_limit: _Optional[int] = ..., as_of_ms: _Optional[int] = ...) -> None: ...

class UpsertSkusRequest(_message.Message):
    __slots__ = ("skus",)
    SKUS_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedCompositeFieldContainer[Sku]
    def __init__(self, skus: _Optional[_Iterable[_Union[Sku, _Mapping]]] = ...) -> None: ...

class SkuResult(_message.Message):
    __slots__ = ("code", "message", "level", "reason", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.ResultCode
    message: str
    level: StockLevel
    reason: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[_Union[_common_pb2.ResultCode, str]] = ..., message: _Optional[str] = ..., level: _Optional[_Union[StockLevel, _Mapping]] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertSkusResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SkuResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SkuResult, _Mapping]]] = ...) -> None: ...

class AdjustStockRequest(_message.Message):
    __slots__ = ("sku_id", "delta", "reason", "request_id")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    delta: int
    reason: str
    request_id: str
    def __init__(self, sku_id: _Optional[str] = ..., delta: _Optional[int] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AdjustStockResponse(_message.Message):
    __slots__ = ("level", "replayed")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    level: StockLevel
    replayed: bool
    def __init__(self, level: _Optional[_Union[StockLevel, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetStockRequest(_message.Message):
    __slots__ = ("sku_id", "consistency")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    consistency: _common_pb2.ReadConsistency
    def __init__(self, sku_id: _Optional[str] = ..., consistency: _Optional[_Union[_common_pb2.ReadConsistency, str]] = ...) -> None: ...

class GetStockResponse(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: StockLevel
    def __init__(self, level: _Optional[_Union[StockLevel, _Mapping]] = ...) -> None: ...

class GetStockLevelsRequest(_message.Message):
    __slots__ = ("sku_ids", "consistency")
    SKU_IDS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    sku_ids: _containers.RepeatedScalarFieldContainer[str]
    consistency: _common_pb2.ReadConsistency
    def __init__(self, sku_ids: _Optional[_Iterable[str]] = ..., consistency: _Optional[_Union[_common_pb2.ReadConsistency, str]] = ...) -> None: ...

class GetStockLevelsResponse(_message.Message):
    __slots__ = ("levels", "missing_sku_ids")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SKU_IDS_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[StockLevel]
    missing_sku_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, levels: _Optional[_Iterable[_Union[StockLevel, _Mapping]]] = ..., missing_sku_ids: _Optional[_Iterable[str]] = ...) -> None: ...
