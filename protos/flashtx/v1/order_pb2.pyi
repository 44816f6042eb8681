from flashtx.protos.flashtx.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATUS_UNSPECIFIED: _ClassVar[OrderStatus]
    ORDER_STATUS_RESERVED: _ClassVar[OrderStatus]
    ORDER_STATUS_PAID: _ClassVar[OrderStatus]
    ORDER_STATUS_FULFILLED: _ClassVar[OrderStatus]
    ORDER_STATUS_CANCELLED: _ClassVar[OrderStatus]
    ORDER_STATUS_EXPIRED: _ClassVar[OrderStatus]
ORDER_STATUS_UNSPECIFIED: OrderStatus
ORDER_STATUS_RESERVED: OrderStatus
ORDER_STATUS_PAID: OrderStatus
ORDER_STATUS_FULFILLED: OrderStatus
ORDER_STATUS_CANCELLED: OrderStatus
ORDER_STATUS_EXPIRED: OrderStatus

class OrderLine(_message.Message):
    __slots__ = ("sku_id", "quantity", "unit_price_minor")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    quantity: int
    unit_price_minor: int
    def __init__(self, sku_id: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price_minor: _Optional[int] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "buyer_id", "idempotency_key", "lines", "status", "total_minor", "created_at_ms", "payment_deadline_ms", "sequence", "refunded", "updated_at_ms", "campaign_id", "currency", "payment_reference")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    buyer_id: str
    idempotency_key: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    status: OrderStatus
    total_minor: int
    created_at_ms: int
    payment_deadline_ms: int
    sequence: int
    refunded: bool
    updated_at_ms: int
    campaign_id: str
    currency: str
    payment_reference: str
    def __init__(self, order_id: _Optional[str] = ..., buyer_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., status: _Optional[_Union[OrderStatus, str]] = ..., total_minor: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., payment_deadline_ms: _Optional[int] = ..., sequence: _Optional[int] = ..., refunded: _Optional[bool] = ..., updated_at_ms: _Optional[int] = ..., campaign_id: _Optional[str] = ..., currency: _Optional[str] = ..., payment_reference: _Optional[str] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("idempotency_key", "buyer_id", "lines", "campaign_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    buyer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    campaign_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., buyer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("order", "replayed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    order: Order
    replayed: bool
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class PlaceOrdersRequest(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[PlaceOrderRequest]
    def __init__(self, orders: _Optional[_Iterable[_Union[PlaceOrderRequest, _Mapping]]] = ...) -> None: ...

class OrderResult(_message.Message):
    __slots__ = ("code", "reason", "message", "order", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.ResultCode
    reason: str
    message: str
    order: Order
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[_Union[_common_pb2.ResultCode, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PlaceOrdersResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OrderResult]
    def __init__(self, results: _Optional[_Iterable[_Union[OrderResult, _Mapping]]] = ...) -> None: ...

class PlaceOrderColumnsRequest(_message.Message):
    __slots__ = ("idempotency_keys", "buyer_ids", "line_counts", "sku_ids", "quantities", "campaign_ids")
    IDEMPOTENCY_KEYS_FIELD_NUMBER: _ClassVar[int]
    BUYER_IDS_FIELD_NUMBER: _ClassVar[int]
    LINE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SKU_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITIES_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    idempotency_keys: _containers.RepeatedScalarFieldContainer[str]
    buyer_ids: _containers.RepeatedScalarFieldContainer[str]
    line_counts: _containers.RepeatedScalarFieldContainer[int]
    sku_ids: _containers.RepeatedScalarFieldContainer[str]
    quantities: _containers.RepeatedScalarFieldContainer[int]
    campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, idempotency_keys: _Optional[_Iterable[str]] = ..., buyer_ids: _Optional[_Iterable[str]] = ..., line_counts: _Optional[_Iterable[int]] = ..., sku_ids: _Optional[_Iterable[str]] = ..., quantities: _Optional[_Iterable[int]] = ..., campaign_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PlaceOrderColumnsResponse(_message.Message):
    __slots__ = ("codes", "order_ids", "total_minor", "payment_deadline_ms", "reasons", "messages", "metadata")
    CODES_FIELD_NUMBER: _ClassVar[int]
    ORDER_IDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MINOR_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    codes: _containers.RepeatedScalarFieldContainer[_common_pb2.ResultCode]
    order_ids: _containers.RepeatedScalarFieldContainer[str]
    total_minor: _containers.RepeatedScalarFieldContainer[int]
    payment_deadline_ms: _containers.RepeatedScalarFieldContainer[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.RepeatedCompositeFieldContainer[_common_pb2.ErrorMetadata]
    def __init__(self, codes: _Optional[_Iterable[_Union[_common_pb2.ResultCode, str]]] = ..., order_ids: _Optional[_Iterable[str]] = ..., total_minor: _Optional[_Iterable[int]] = ..., payment_deadline_ms: _Optional[_Iterable[int]] = ..., reasons: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Iterable[_Union[_common_pb2.ErrorMetadata, _Mapping]]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("buyer_id", "page_size", "page_token")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    page_size: int
    page_token: str
    def __init__(self, buyer_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PayOrderRequest(_message.Message):
    __slots__ = ("order_id", "payment_reference")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    payment_reference: str
    def __init__(self, order_id: _Optional[str] = ..., payment_reference: _Optional[str] = ...) -> None: ...

class PayOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class FulfillOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class FulfillOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...
