from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CampaignSku(_message.Message):
    __slots__ = ("sku_id", "sale_price_minor", "allotment", "per_buyer_limit")
    SKU_ID_FIELD_NUMBER: _ClassVar[int]
    SALE_PRICE_MINOR_FIELD_NUMBER: _ClassVar[int]
    ALLOTMENT_FIELD_NUMBER: _ClassVar[int]
    PER_BUYER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    sku_id: str
    sale_price_minor: int
    allotment: int
    per_buyer_limit: int
    def __init__(self, sku_id: _Optional[str] = ..., sale_price_minor: _Optional[int] = ..., allotment: _Optional[int] = ..., per_buyer_limit: _Optional[int] = ...) -> None: ...

class CampaignSkuState(_message.Message):
    __slots__ = ("sku", "units", "available", "reserved", "sold", "sold_out")
    SKU_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    SOLD_FIELD_NUMBER: _ClassVar[int]
    SOLD_OUT_FIELD_NUMBER: _ClassVar[int]
    sku: CampaignSku
    units: int
    available: int
    reserved: int
    sold: int
    sold_out: bool
    def __init__(self, sku: _Optional[_Union[CampaignSku, _Mapping]] = ..., units: _Optional[int] = ..., available: _Optional[int] = ..., reserved: _Optional[int] = ..., sold: _Optional[int] = ..., sold_out: _Optional[bool] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("campaign_id", "name", "starts_at_ms", "ends_at_ms", "buckets", "skus", "ended", "created_at_ms")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    name: str
    starts_at_ms: int
    ends_at_ms: int
    buckets: int
    skus: _containers.RepeatedCompositeFieldContainer[CampaignSkuState]
    ended: bool
    created_at_ms: int
    def __init__(self, campaign_id: _Optional[str] = ..., name: _Optional[str] = ..., starts_at_ms: _Optional[int] = ..., ends_at_ms: _Optional[int] = ..., buckets: _Optional[int] = ..., skus: _Optional[_Iterable[_Union[CampaignSkuState, _Mapping]]] = ..., ended: _Optional[bool] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class CreateCampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "name", "starts_at_ms", "ends_at_ms", "skus", "buckets")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    name: str
    starts_at_ms: int
    ends_at_ms: int
    skus: _containers.RepeatedCompositeFieldContainer[CampaignSku]
    buckets: int
    def __init__(self, campaign_id: _Optional[str] = ..., name: _Optional[str] = ..., starts_at_ms: _Optional[int] = ..., ends_at_ms: _Optional[int] = ..., skus: _Optional[_Iterable[_Union[CampaignSku, _Mapping]]] = ..., buckets: _Optional[int] = ...) -> None: ...

class CreateCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class GetCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class EndCampaignResponse(_message.Message):
    __slots__ = ("campaign",)
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    campaign: Campaign
    def __init__(self, campaign: _Optional[_Union[Campaign, _Mapping]] = ...) -> None: ...

class GetCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class ListCampaignsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCampaignsResponse(_message.Message):
    __slots__ = ("campaigns", "next_page_token")
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[Campaign]
    next_page_token: str
    def __init__(self, campaigns: _Optional[_Iterable[_Union[Campaign, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EndCampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...
