from flashtx.protos.flashtx.v1 import order_pb2 as _order_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CartLine(_message.Message):
    __slots__ = ("sku_id", "quantity", "held_until_ms")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    HELD_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    quantity: int
    held_until_ms: int
    def __init__(self, sku_id: _Optional[str] = ..., quantity: _Optional[int] = ..., held_until_ms: _Optional[int] = ...) -> None: ...

class Cart(_message.Message):
    __slots__ = ("buyer_id", "campaign_id", "lines", "updated_at_ms", "expires_at_ms")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    lines: _containers.RepeatedCompositeFieldContainer[CartLine]
    updated_at_ms: int
    expires_at_ms: int
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[CartLine, _Mapping]]] = ..., updated_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class AddItemRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id", "sku_id", "quantity", "request_id")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    sku_id: str
    quantity: int
    request_id: str
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., sku_id: _Optional[str] = ..., quantity: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateQuantityRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id", "sku_id", "quantity")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    sku_id: str
    quantity: int
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., sku_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class RemoveItemRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id", "sku_id")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    sku_id: str
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., sku_id: _Optional[str] = ...) -> None: ...

class GetCartRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class ClearCartRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ...) -> None: ...

class AddItemResponse(_message.Message):
    __slots__ = ("cart", "replayed")
    CART_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    cart: Cart
    replayed: bool
    def __init__(self, cart: _Optional[_Union[Cart, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class UpdateQuantityResponse(_message.Message):
    __slots__ = ("cart",)
    CART_FIELD_NUMBER: _ClassVar[int]
    cart: Cart
    def __init__(self, cart: _Optional[_Union[Cart, _Mapping]] = ...) -> None: ...

class RemoveItemResponse(_message.Message):
    __slots__ = ("cart",)
    CART_FIELD_NUMBER: _ClassVar[int]
    cart: Cart
    def __init__(self, cart: _Optional[_Union[Cart, _Mapping]] = ...) -> None: ...

class GetCartResponse(_message.Message):
    __slots__ = ("cart",)
    CART_FIELD_NUMBER: _ClassVar[int]
    cart: Cart
    def __init__(self, cart: _Optional[_Union[Cart, _Mapping]] = ...) -> None: ...

class ClearCartResponse(_message.Message):
    __slots__ = ("cart",)
    CART_FIELD_NUMBER: _ClassVar[int]
    cart: Cart
    def __init__(self, cart: _Optional[_Union[Cart, _Mapping]] = ...) -> None: ...

class CheckoutRequest(_message.Message):
    __slots__ = ("buyer_id", "campaign_id", "idempotency_key")
    BUYER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    buyer_id: str
    campaign_id: str
    idempotency_key: str
    def __init__(self, buyer_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CheckoutResponse(_message.Message):
    __slots__ = ("order", "replayed")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    order: _order_pb2.Order
    replayed: bool
    def __init__(self, order: _Optional[_Union[_order_pb2.Order, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...
