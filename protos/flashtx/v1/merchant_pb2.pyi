from google.protobuf import field_mask_pb2 as _field_mask_pb2
from flashtx.protos.flashtx.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Merchant(_message.Message):
    __slots__ = ("merchant_id", "name", "created_at_ms", "payment_window_s", "cart_hold_s", "currency")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    CART_HOLD_S_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    name: str
    created_at_ms: int
    payment_window_s: int
    cart_hold_s: int
    currency: str
    def __init__(self, merchant_id: _Optional[str] = ..., name: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., payment_window_s: _Optional[int] = ..., cart_hold_s: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "scopes", "label", "created_at_ms", "revoked")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    scopes: _containers.RepeatedScalarFieldContainer[_common_pb2.Scope]
    label: str
    created_at_ms: int
    revoked: bool
    def __init__(self, key_id: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[_common_pb2.Scope, str]]] = ..., label: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., revoked: _Optional[bool] = ...) -> None: ...

class CreateMerchantRequest(_message.Message):
    __slots__ = ("merchant_id", "name", "payment_window_s", "cart_hold_s", "request_id", "currency")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    CART_HOLD_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    name: str
    payment_window_s: int
    cart_hold_s: int
    request_id: str
    currency: str
    def __init__(self, merchant_id: _Optional[str] = ..., name: _Optional[str] = ..., payment_window_s: _Optional[int] = ..., cart_hold_s: _Optional[int] = ..., request_id: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class CreateMerchantResponse(_message.Message):
    __slots__ = ("merchant", "admin_key", "admin_key_secret", "replayed")
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_KEY_FIELD_NUMBER: _ClassVar[int]
    ADMIN_KEY_SECRET_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    admin_key: ApiKey
    admin_key_secret: str
    replayed: bool
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ..., admin_key: _Optional[_Union[ApiKey, _Mapping]] = ..., admin_key_secret: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetMerchantRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMerchantResponse(_message.Message):
    __slots__ = ("merchant", "api_keys")
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ..., api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("scopes", "label", "request_id")
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    scopes: _containers.RepeatedScalarFieldContainer[_common_pb2.Scope]
    label: str
    request_id: str
    def __init__(self, scopes: _Optional[_Iterable[_Union[_common_pb2.Scope, str]]] = ..., label: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class UpdateMerchantRequest(_message.Message):
    __slots__ = ("payment_window_s", "cart_hold_s", "update_mask")
    PAYMENT_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    CART_HOLD_S_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    payment_window_s: int
    cart_hold_s: int
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, payment_window_s: _Optional[int] = ..., cart_hold_s: _Optional[int] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateMerchantResponse(_message.Message):
    __slots__ = ("merchant",)
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    merchant: Merchant
    def __init__(self, merchant: _Optional[_Union[Merchant, _Mapping]] = ...) -> None: ...

class ListMerchantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMerchantsResponse(_message.Message):
    __slots__ = ("merchants", "next_page_token")
    MERCHANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    merchants: _containers.RepeatedCompositeFieldContainer[Merchant]
    next_page_token: str
    def __init__(self, merchants: _Optional[_Iterable[_Union[Merchant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
