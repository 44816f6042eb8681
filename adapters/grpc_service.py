"""gRPC servicers for flashtx.v1: translate messages to engine values and back.

They hold no state and make no Ray calls: they call a ``Backend`` (the gateway actor
implements it), so they are the same whether the backend is local or distributed.
Errors raise as domain errors; FlashtxInterceptor maps them to statuses.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from flashtx.adapters.grpc_errors import current_principal
from flashtx.adapters.wire import fill_order
from flashtx.engine import errors
from flashtx.engine.carts import CartSnapshot
from flashtx.engine.config import Config
from flashtx.engine.errors import DomainError, InvalidArgument, ResultCode, explain
from flashtx.engine.merchants import Principal, Scope
from flashtx.engine.messages import PageRequest
from flashtx.engine.orders import OrderSnapshot, order_slot
from flashtx.engine.stock import StockLevel
from flashtx.engine.validation import (
    check_columns,
    check_id,
    check_ids,
    check_length,
    check_order,
    check_range,
    check_sku,
)
from flashtx_client.v1 import (
    campaign_pb2,
    campaign_pb2_grpc,
    cart_pb2,
    cart_pb2_grpc,
    common_pb2,
    event_pb2,
    event_pb2_grpc,
    merchant_pb2,
    merchant_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    stock_pb2,
    stock_pb2_grpc,
)

# (idempotency_key, buyer, lines, campaign_id)
Placement = tuple[str, str, tuple[tuple[str, int], ...], str]


class Backend(Protocol):
    config: Config
    events_redis: Any  # redis.asyncio.Redis, or None when events are off

    def now_ms(self) -> int:
        """The engine's clock (what the shards compare deadlines with)."""

    async def create_merchant(self, merchant_id: str, name: str, payment_window_s: int,
                              cart_hold_s: int = 0, request_id: str = "", currency: str = ""
                              ) -> tuple[dict[str, Any], dict[str, Any], str, bool]:
        """(merchant, admin key, its token, replayed)."""
    async def get_merchant(self, merchant_id: str) -> tuple[dict[str, Any],
                                                            list[dict[str, Any]]]: ...
    async def list_merchants(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` merchants whose id sorts after `after`, in id order."""
    async def create_api_key(self, merchant_id: str, scopes: list[int], label: str,
                             request_id: str = "") -> tuple[dict[str, Any], str]: ...
    async def revoke_api_key(self, merchant_id: str, key_id: str) -> dict[str, Any]: ...
    async def upsert_skus(self, merchant_id: str,
                          items: list[tuple[str, str, int, int, int]]) -> list[Any]: ...
    async def adjust_stock(self, merchant_id: str, sku_id: str, delta: int, reason: str,
                           request_id: str = "") -> tuple[StockLevel, bool]:
        """(level, applied): applied is False for a retried request_id applied before."""
    async def stock_levels(self, merchant_id: str, sku_ids: Sequence[str],
                           strong: bool) -> list[bytes | None]:
        """Per SKU, its level as a GetStockResponse's bytes (``adapters.wire.level_entry``);
        None for an unknown SKU."""
    async def place_orders(self, principal: Principal, placements: Sequence[Placement],
                           deadline_ms: int = 0) -> list[tuple[ResultCode, Any]]:
        """deadline_ms: wall-clock ms after which an order not yet begun is not placed."""
    async def order_action(self, merchant_id: str, op: str, target: str, argument: Any,
                           only_key: str = "") -> Any:
        """Runs get / list / pay / cancel / fulfil; raises DomainError. With `only_key`,
        orders placed by other keys are NOT_FOUND."""
    async def cart_action(self, principal: Principal, op: str, buyer_id: str,
                          campaign_id: str, sku_id: str = "", quantity: int = 0,
                          request_id: str = "") -> Any:
        """add / set / remove / get / clear; returns a CartSnapshot."""
    async def checkout(self, principal: Principal, buyer_id: str, campaign_id: str,
                       idempotency_key: str, deadline_ms: int = 0) -> tuple[ResultCode, Any]: ...
    async def update_merchant(self, merchant_id: str, payment_window_s: int | None,
                              cart_hold_s: int | None) -> dict[str, Any]: ...
    async def create_campaign(self, merchant_id: str, campaign_id: str, name: str,
                              starts_at_ms: int, ends_at_ms: int, buckets: int,
                              skus: list[tuple[str, int, int, int]]) -> dict[str, Any]: ...
    async def get_campaign(self, merchant_id: str, campaign_id: str) -> dict[str, Any]: ...
    async def list_campaigns(self, merchant_id: str) -> list[dict[str, Any]]: ...
    async def end_campaign(self, merchant_id: str, campaign_id: str) -> dict[str, Any]: ...


# --- conversions ---------------------------------------------------------------------------

def order_message(order: OrderSnapshot) -> order_pb2.Order:
    message = order_pb2.Order()
    fill_order(message, order)
    return message


def cart_message(cart: CartSnapshot) -> cart_pb2.Cart:
    return cart_pb2.Cart(
        buyer_id=cart.buyer_id, campaign_id=cart.campaign_id,
        lines=[cart_pb2.CartLine(sku_id=s, quantity=q, held_until_ms=h)
               for s, q, h in cart.lines],
        updated_at_ms=cart.updated_at_ms, expires_at_ms=cart.expires_at_ms)


def campaign_message(described: dict[str, Any]) -> campaign_pb2.Campaign:
    campaign = described["campaign"]
    return campaign_pb2.Campaign(
        campaign_id=campaign.campaign_id, name=campaign.name,
        starts_at_ms=campaign.starts_at_ms, ends_at_ms=campaign.ends_at_ms,
        buckets=campaign.buckets, ended=campaign.ended, created_at_ms=campaign.created_at_ms,
        skus=[campaign_pb2.CampaignSkuState(
            sku=campaign_pb2.CampaignSku(
                sku_id=state["sku"].sku_id, sale_price_minor=state["sku"].sale_price_minor,
                allotment=state["sku"].allotment,
                per_buyer_limit=state["sku"].per_buyer_limit),
            units=state["sku"].units, available=state["available"],
            reserved=state["reserved"], sold=state["sold"], sold_out=state["sold_out"])
            for state in described["skus"]])


def level_message(level: StockLevel) -> stock_pb2.StockLevel:
    return stock_pb2.StockLevel(
        sku_id=level.sku_id, name=level.name, price_minor=level.price_minor,
        on_hand=level.on_hand, available=level.available, reserved=level.reserved,
        sold=level.sold, per_buyer_limit=level.per_buyer_limit, as_of_ms=level.as_of_ms)


def _key_message(key: dict[str, Any]) -> merchant_pb2.ApiKey:
    return merchant_pb2.ApiKey(**key)


def _lines(request: order_pb2.PlaceOrderRequest) -> list[tuple[str, int]]:
    return [(line.sku_id, line.quantity) for line in request.lines]


_ORDERS_TOKEN, _CAMPAIGNS_TOKEN, _MERCHANTS_TOKEN = "o1.", "c1.", "m1."


def _token(prefix: str, raw: str) -> str:
    """An opaque page token: a prefix naming the List RPC and its position, base64."""
    return prefix + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _untoken(prefix: str, token: str) -> str:
    """The position a `_token` carries; ValueError for anything else."""
    if not token.startswith(prefix) or len(token) > 200:
        raise ValueError(token)
    body = token[len(prefix):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def page_token(position: tuple[int, str]) -> str:
    """A ListOrders token: the (created_at_ms, order_id) the next page starts before."""
    created_at_ms, order_id = position
    return _token(_ORDERS_TOKEN, f"{created_at_ms}:{order_id}")


def page_position(token: str) -> tuple[int, str]:
    """The position a ListOrders token names; INVALID_ARGUMENT for anything else."""
    try:
        created, _, order_id = _untoken(_ORDERS_TOKEN, token).partition(":")
        if not created.isdigit() or not order_id or int(created) >= 2**63:
            raise ValueError(token)  # a position Postgres' bigint cannot hold is no token
        return int(created), order_id
    except ValueError:
        raise InvalidArgument("page_token", "is not a token from ListOrders") from None


def _campaign_token(campaign_id: str) -> str:
    """A ListCampaigns token: the campaign id the next page starts after."""
    return _token(_CAMPAIGNS_TOKEN, campaign_id)


def _campaign_position(token: str) -> str:
    return _id_position(_CAMPAIGNS_TOKEN, token, "ListCampaigns")


def _id_position(prefix: str, token: str, rpc: str) -> str:
    """The id a page token of `rpc` starts after; INVALID_ARGUMENT for anything else."""
    try:
        after = _untoken(prefix, token)
        if not after:
            raise ValueError(token)
        return after
    except ValueError:
        raise InvalidArgument("page_token", f"is not a token from {rpc}") from None


def _only_key(principal: Principal) -> str:
    """A key with only the channel scope sees only the orders it placed itself."""
    return principal.key_id if principal.scopes == frozenset({Scope.CHANNEL}) else ""


def _deadline_ms(context: Any, backend: Backend) -> int:
    """The call's deadline on the engine's clock (the one the shards compare it with),
    for shards in other processes; 0: none."""
    remaining_s = context.time_remaining() if context is not None else None
    if remaining_s is None or remaining_s > 10**6:
        return 0
    return backend.now_ms() + int(remaining_s * 1000)


def _raise_for(code: ResultCode, value: Any) -> DomainError:
    return errors.error_for(code, value)


def _fill_result(result: order_pb2.OrderResult, code: ResultCode, value: Any) -> None:
    result.code = code  # type: ignore[assignment]
    if code is ResultCode.OK or code is ResultCode.REPLAYED:
        fill_order(result.order, value)
    else:
        result.reason, result.message, metadata = explain(code, value)
        if metadata:
            result.metadata.update(metadata)


# --- services ------------------------------------------------------------------------------

class MerchantServicer(merchant_pb2_grpc.MerchantServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def CreateMerchant(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        if request.merchant_id:
            check_id("merchant_id", request.merchant_id, 40)
        check_length("name", request.name, config.name_length_max)
        check_range("payment_window_s", request.payment_window_s, 0,
                    config.payment_window_s_max)
        check_range("cart_hold_s", request.cart_hold_s, 0, config.cart_hold_s_max)
        if request.request_id:
            check_id("request_id", request.request_id, config.id_length_max)
        merchant, key, token, replayed = await self._backend.create_merchant(
            request.merchant_id, request.name, request.payment_window_s, request.cart_hold_s,
            request.request_id, request.currency)
        return merchant_pb2.CreateMerchantResponse(
            merchant=merchant_pb2.Merchant(**merchant), admin_key=_key_message(key),
            admin_key_secret=token, replayed=replayed)

    async def GetMerchant(self, request: Any, context: Any) -> Any:
        merchant, keys = await self._backend.get_merchant(current_principal().merchant_id)
        return merchant_pb2.GetMerchantResponse(merchant=merchant_pb2.Merchant(**merchant),
                                                api_keys=[_key_message(k) for k in keys])

    async def ListMerchants(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        limit = request.page_size or config.list_orders_page_size_default
        check_range("page_size", limit, 1, config.list_orders_page_size_max)
        after = (_id_position(_MERCHANTS_TOKEN, request.page_token, "ListMerchants")
                 if request.page_token else "")
        found = await self._backend.list_merchants(after, limit + 1)
        page = found[:limit]
        return merchant_pb2.ListMerchantsResponse(
            merchants=[merchant_pb2.Merchant(**m) for m in page],
            next_page_token=(_token(_MERCHANTS_TOKEN, page[-1]["merchant_id"])
                             if len(found) > limit else ""))

    async def CreateApiKey(self, request: Any, context: Any) -> Any:
        scopes = sorted(set(request.scopes))
        if not scopes or any(s not in (Scope.CHANNEL, Scope.SAAS, Scope.ADMIN) for s in scopes):
            raise InvalidArgument("scopes", "name one or more of SCOPE_CHANNEL, SCOPE_SAAS, "
                                  "SCOPE_ADMIN")
        check_length("label", request.label, self._backend.config.name_length_max)
        if request.request_id:
            check_id("request_id", request.request_id, self._backend.config.id_length_max)
        key, token = await self._backend.create_api_key(current_principal().merchant_id,
                                                        scopes, request.label,
                                                        request.request_id)
        return merchant_pb2.CreateApiKeyResponse(api_key=_key_message(key), secret=token)

    async def UpdateMerchant(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_range("payment_window_s", request.payment_window_s, 0,
                    config.payment_window_s_max)
        check_range("cart_hold_s", request.cart_hold_s, 0, config.cart_hold_s_max)
        fields = {"payment_window_s", "cart_hold_s"}
        if request.HasField("update_mask"):
            paths = set(request.update_mask.paths)
            unknown = sorted(paths - fields)
            if unknown:
                raise InvalidArgument("update_mask", f"unknown field {unknown[0]!r}; known:"
                                      f" {', '.join(sorted(fields))}")
            fields = paths
        merchant = await self._backend.update_merchant(
            current_principal().merchant_id,
            request.payment_window_s if "payment_window_s" in fields else None,
            request.cart_hold_s if "cart_hold_s" in fields else None)
        return merchant_pb2.UpdateMerchantResponse(merchant=merchant_pb2.Merchant(**merchant))

    async def RevokeApiKey(self, request: Any, context: Any) -> Any:
        check_id("key_id", request.key_id, self._backend.config.id_length_max)
        key = await self._backend.revoke_api_key(current_principal().merchant_id,
                                                 request.key_id)
        return merchant_pb2.RevokeApiKeyResponse(api_key=_key_message(key))


class StockServicer(stock_pb2_grpc.StockServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def UpsertSkus(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        if not 1 <= len(request.skus) <= config.skus_per_upsert_max:
            raise InvalidArgument("skus", f"needs 1..{config.skus_per_upsert_max} SKUs")
        items, seen = [], set()
        for i, sku in enumerate(request.skus):
            check_sku(config, f"skus[{i}].", sku.sku_id, sku.name, sku.price_minor,
                      sku.on_hand, sku.per_buyer_limit)
            if sku.sku_id in seen:
                raise InvalidArgument(f"skus[{i}].sku_id", f"{sku.sku_id} appears twice")
            seen.add(sku.sku_id)
            items.append((sku.sku_id, sku.name, sku.price_minor, sku.on_hand,
                          sku.per_buyer_limit))
        results = await self._backend.upsert_skus(current_principal().merchant_id, items)
        # ignore: the generated stub types `code` as ResultCode, an int subclass that exists
        # only in the stub (enum values are plain ints at run time).
        return stock_pb2.UpsertSkusResponse(results=[
            stock_pb2.SkuResult(code=common_pb2.RESULT_CODE_OK, level=level_message(r))
            if isinstance(r, StockLevel) else
            stock_pb2.SkuResult(code=int(r.code),  # type: ignore[arg-type]
                                reason=r.reason, message=r.message, metadata=r.metadata)
            for r in results])

    async def AdjustStock(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_id("sku_id", request.sku_id, config.id_length_max)
        check_range("delta", request.delta, -config.on_hand_max, config.on_hand_max)
        if request.delta == 0:
            raise InvalidArgument("delta", "must not be 0")
        check_length("reason", request.reason, config.reason_length_max)
        if request.request_id:
            check_id("request_id", request.request_id, config.id_length_max)
        level, applied = await self._backend.adjust_stock(
            current_principal().merchant_id, request.sku_id, request.delta, request.reason,
            request.request_id)
        return stock_pb2.AdjustStockResponse(level=level_message(level), replayed=not applied)

    async def GetStock(self, request: Any, context: Any) -> Any:
        check_id("sku_id", request.sku_id, self._backend.config.id_length_max)
        strong = request.consistency == common_pb2.READ_CONSISTENCY_STRONG
        [entry] = await self._backend.stock_levels(current_principal().merchant_id,
                                                   [request.sku_id], strong)
        if entry is None:
            raise errors.NotFound(f"unknown sku {request.sku_id}", sku_id=request.sku_id)
        return entry  # a GetStockResponse's bytes (adapters.wire.level_entry)

    async def GetStockLevels(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        sku_ids = list(request.sku_ids)
        if not 1 <= len(sku_ids) <= config.sku_ids_per_read_max:
            raise InvalidArgument("sku_ids", f"needs 1..{config.sku_ids_per_read_max} ids")
        check_ids("sku_ids", sku_ids, config.id_length_max)
        strong = request.consistency == common_pb2.READ_CONSISTENCY_STRONG
        entries = await self._backend.stock_levels(current_principal().merchant_id, sku_ids,
                                                   strong)
        # The answer's bytes: each level entry as it is (field 1), then the missing ids.
        answer = b"".join([entry for entry in entries if entry is not None])
        if None in entries:
            missing = [s for s, entry in zip(sku_ids, entries, strict=True) if entry is None]
            answer += stock_pb2.GetStockLevelsResponse(
                missing_sku_ids=missing).SerializeToString()
        return answer


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def PlaceOrder(self, request: Any, context: Any) -> Any:
        lines = check_order(self._backend.config, "", request.idempotency_key,
                            request.buyer_id, _lines(request))
        _check_campaign_id("campaign_id", request.campaign_id, self._backend.config)
        [(code, value)] = await self._backend.place_orders(
            current_principal(),
            [(request.idempotency_key, request.buyer_id, lines, request.campaign_id)],
            _deadline_ms(context, self._backend))
        if code is not ResultCode.OK and code is not ResultCode.REPLAYED:
            raise _raise_for(code, value)
        return order_pb2.PlaceOrderResponse(order=order_message(value),
                                            replayed=code is ResultCode.REPLAYED)

    async def PlaceOrders(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        count = len(request.orders)
        if not 1 <= count <= config.place_orders_batch_max:
            raise InvalidArgument("orders", f"needs 1..{config.place_orders_batch_max} orders")
        response = order_pb2.PlaceOrdersResponse()
        results = [response.results.add() for _ in range(count)]
        valid: list[Placement] = []
        positions: list[int] = []
        for i, order in enumerate(request.orders):
            try:
                lines = check_order(config, f"orders[{i}].", order.idempotency_key,
                                    order.buyer_id, _lines(order))
                _check_campaign_id(f"orders[{i}].campaign_id", order.campaign_id, config)
            except InvalidArgument as error:
                _fill_result(results[i], ResultCode.INVALID_ARGUMENT, error)
                continue
            valid.append((order.idempotency_key, order.buyer_id, lines, order.campaign_id))
            positions.append(i)
        if valid:
            answers = await self._backend.place_orders(current_principal(), valid,
                                                       _deadline_ms(context, self._backend))
            for i, (code, value) in zip(positions, answers, strict=True):
                _fill_result(results[i], code, value)
        return response

    async def PlaceOrderColumns(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        keys, buyer_ids = list(request.idempotency_keys), list(request.buyer_ids)
        counts, campaign_ids = list(request.line_counts), list(request.campaign_ids)
        sku_ids, quantities = list(request.sku_ids), list(request.quantities)
        count = len(keys)
        check_columns(config, count, buyer_ids, counts, sku_ids, quantities, campaign_ids)
        codes: list[Any] = [0] * count  # ResultCode values (an IntEnum)
        invalid: list[tuple[int, dict[str, str]]] = []
        reasons, messages = [""] * count, [""] * count
        valid: list[Placement] = []
        positions: list[int] = []
        start = 0
        for i, (key, buyer_id, lines_count) in enumerate(zip(keys, buyer_ids, counts,
                                                                 strict=True)):
            end = start + lines_count
            lines = list(zip(sku_ids[start:end], quantities[start:end], strict=True))
            start = end
            campaign_id = campaign_ids[i] if campaign_ids else ""
            try:
                checked = check_order(config, f"orders[{i}].", key, buyer_id, lines)
                _check_campaign_id(f"orders[{i}].campaign_id", campaign_id, config)
            except InvalidArgument as error:
                codes[i] = ResultCode.INVALID_ARGUMENT
                reasons[i], messages[i] = error.reason, error.message
                invalid.append((i, error.metadata))
                continue
            valid.append((key, buyer_id, checked, campaign_id))
            positions.append(i)
        order_ids, totals, deadlines = [""] * count, [0] * count, [0] * count
        metadata: list[dict[str, str]] = [{}] * count
        for i, entries in invalid:
            metadata[i] = entries
        if valid:
            answers = await self._backend.place_orders(current_principal(), valid,
                                                       _deadline_ms(context, self._backend))
            for i, (code, value) in zip(positions, answers, strict=True):
                codes[i] = code
                if code is ResultCode.OK or code is ResultCode.REPLAYED:
                    order_ids[i] = value.order_id
                    totals[i], deadlines[i] = value.total_minor, value.payment_deadline_ms
                else:
                    reasons[i], messages[i], metadata[i] = explain(code, value)
        response = order_pb2.PlaceOrderColumnsResponse(
            codes=codes, order_ids=order_ids, total_minor=totals, payment_deadline_ms=deadlines,
            reasons=reasons, messages=messages)
        if any(metadata):
            for entries in metadata:
                response.metadata.add().entries.update(entries)
        return response

    async def GetOrder(self, request: Any, context: Any) -> Any:
        return order_pb2.GetOrderResponse(order=await self._act("get", request.order_id))

    async def PayOrder(self, request: Any, context: Any) -> Any:
        check_length("payment_reference", request.payment_reference,
                     self._backend.config.reason_length_max)
        return order_pb2.PayOrderResponse(order=await self._act(
            "pay", request.order_id, request.payment_reference or None))

    async def CancelOrder(self, request: Any, context: Any) -> Any:
        check_length("reason", request.reason, self._backend.config.reason_length_max)
        return order_pb2.CancelOrderResponse(order=await self._act("cancel", request.order_id))

    async def FulfillOrder(self, request: Any, context: Any) -> Any:
        return order_pb2.FulfillOrderResponse(order=await self._act("fulfil", request.order_id))

    async def ListOrders(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_id("buyer_id", request.buyer_id, config.id_length_max)
        limit = request.page_size or config.list_orders_page_size_default
        check_range("page_size", limit, 1, config.list_orders_page_size_max)
        before = page_position(request.page_token) if request.page_token else None
        principal = current_principal()
        page, after = await self._backend.order_action(
            principal.merchant_id, "list", request.buyer_id, PageRequest(before, limit),
            _only_key(principal))
        return order_pb2.ListOrdersResponse(
            orders=[order_message(o) for o in page],
            next_page_token="" if after is None else page_token(after))

    async def _act(self, op: str, order_id: str, argument: Any = None) -> order_pb2.Order:
        check_id("order_id", order_id, self._backend.config.id_length_max)
        order_slot(order_id)  # NotFound unless it names a slot
        principal = current_principal()
        return order_message(await self._backend.order_action(
            principal.merchant_id, op, order_id, argument, _only_key(principal)))


def _check_campaign_id(field: str, campaign_id: str, config: Config) -> None:
    if campaign_id:
        check_id(field, campaign_id, config.id_length_max)


class CartServicer(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def AddItem(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_range("quantity", request.quantity, 1, config.quantity_per_line_max)
        if request.request_id:
            check_id("request_id", request.request_id, config.id_length_max)
        cart = await self._changed("add", request, request.sku_id, request.quantity,
                                   request.request_id)
        return cart_pb2.AddItemResponse(cart=cart_message(cart), replayed=cart.replayed)

    async def UpdateQuantity(self, request: Any, context: Any) -> Any:
        check_range("quantity", request.quantity, 0, self._backend.config.quantity_per_line_max)
        return cart_pb2.UpdateQuantityResponse(
            cart=await self._change("set", request, request.sku_id, request.quantity))

    async def RemoveItem(self, request: Any, context: Any) -> Any:
        return cart_pb2.RemoveItemResponse(
            cart=await self._change("remove", request, request.sku_id, 0))

    async def GetCart(self, request: Any, context: Any) -> Any:
        return cart_pb2.GetCartResponse(cart=await self._change("get", request, "", 0))

    async def ClearCart(self, request: Any, context: Any) -> Any:
        return cart_pb2.ClearCartResponse(cart=await self._change("clear", request, "", 0))

    async def Checkout(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_id("idempotency_key", request.idempotency_key, config.id_length_max)
        self._check_cart(request)
        code, value = await self._backend.checkout(
            current_principal(), request.buyer_id, request.campaign_id,
            request.idempotency_key, _deadline_ms(context, self._backend))
        if code is not ResultCode.OK and code is not ResultCode.REPLAYED:
            raise _raise_for(code, value)
        return cart_pb2.CheckoutResponse(order=order_message(value),
                                         replayed=code is ResultCode.REPLAYED)

    def _check_cart(self, request: Any) -> None:
        config = self._backend.config
        check_id("buyer_id", request.buyer_id, config.id_length_max)
        _check_campaign_id("campaign_id", request.campaign_id, config)

    async def _change(self, op: str, request: Any, sku_id: str, quantity: int) -> cart_pb2.Cart:
        return cart_message(await self._changed(op, request, sku_id, quantity))

    async def _changed(self, op: str, request: Any, sku_id: str, quantity: int,
                       request_id: str = "") -> CartSnapshot:
        self._check_cart(request)
        if op not in ("get", "clear"):
            check_id("sku_id", sku_id, self._backend.config.id_length_max)
        cart: CartSnapshot = await self._backend.cart_action(
            current_principal(), op, request.buyer_id, request.campaign_id, sku_id, quantity,
            request_id)
        return cart


class CampaignServicer(campaign_pb2_grpc.CampaignServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def CreateCampaign(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        check_id("campaign_id", request.campaign_id, config.id_length_max)
        check_length("name", request.name, config.name_length_max)
        check_range("starts_at_ms", request.starts_at_ms, 0, 2**53)
        check_range("ends_at_ms", request.ends_at_ms, 0, 2**53)
        buckets = request.buckets or 1
        check_range("buckets", buckets, 1, config.campaign_buckets_max)
        if not 1 <= len(request.skus) <= config.campaign_skus_max:
            raise InvalidArgument("skus", f"needs 1..{config.campaign_skus_max} SKUs")
        skus = []
        for i, sku in enumerate(request.skus):
            check_id(f"skus[{i}].sku_id", sku.sku_id, config.id_length_max)
            check_range(f"skus[{i}].sale_price_minor", sku.sale_price_minor, 0,
                        config.price_minor_max)
            check_range(f"skus[{i}].allotment", sku.allotment, 0, config.on_hand_max)
            check_range(f"skus[{i}].per_buyer_limit", sku.per_buyer_limit, 0,
                        config.quantity_per_line_max)
            skus.append((sku.sku_id, sku.sale_price_minor, sku.allotment, sku.per_buyer_limit))
        described = await self._backend.create_campaign(
            current_principal().merchant_id, request.campaign_id, request.name,
            request.starts_at_ms, request.ends_at_ms, buckets, skus)
        return campaign_pb2.CreateCampaignResponse(campaign=campaign_message(described))

    async def GetCampaign(self, request: Any, context: Any) -> Any:
        check_id("campaign_id", request.campaign_id, self._backend.config.id_length_max)
        described = await self._backend.get_campaign(current_principal().merchant_id,
                                                      request.campaign_id)
        return campaign_pb2.GetCampaignResponse(campaign=campaign_message(described))

    async def ListCampaigns(self, request: Any, context: Any) -> Any:
        config = self._backend.config
        limit = request.page_size or config.list_orders_page_size_default
        check_range("page_size", limit, 1, config.list_orders_page_size_max)
        after = _campaign_position(request.page_token) if request.page_token else None
        described = sorted(await self._backend.list_campaigns(current_principal().merchant_id),
                           key=lambda d: str(d["campaign"].campaign_id))
        if after is not None:
            described = [d for d in described if d["campaign"].campaign_id > after]
        page = described[:limit]
        more = len(described) > limit
        return campaign_pb2.ListCampaignsResponse(
            campaigns=[campaign_message(d) for d in page],
            next_page_token=_campaign_token(page[-1]["campaign"].campaign_id) if more else "")

    async def EndCampaign(self, request: Any, context: Any) -> Any:
        check_id("campaign_id", request.campaign_id, self._backend.config.id_length_max)
        described = await self._backend.end_campaign(current_principal().merchant_id,
                                                      request.campaign_id)
        return campaign_pb2.EndCampaignResponse(campaign=campaign_message(described))


def add_servicers(server: grpc.aio.Server, backend: Backend) -> list[str]:
    """Registers every flashtx.v1 service; returns their full names (for reflection)."""
    from flashtx.adapters.event_service import EventServicer

    merchant_pb2_grpc.add_MerchantServiceServicer_to_server(MerchantServicer(backend), server)
    stock_pb2_grpc.add_StockServiceServicer_to_server(StockServicer(backend), server)
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(backend), server)
    cart_pb2_grpc.add_CartServiceServicer_to_server(CartServicer(backend), server)
    campaign_pb2_grpc.add_CampaignServiceServicer_to_server(CampaignServicer(backend), server)
    event_pb2_grpc.add_EventServiceServicer_to_server(
        EventServicer(backend.config, backend.events_redis), server)
    return [descriptor.services_by_name[name].full_name
            for descriptor, name in ((merchant_pb2.DESCRIPTOR, "MerchantService"),
                                     (stock_pb2.DESCRIPTOR, "StockService"),
                                     (order_pb2.DESCRIPTOR, "OrderService"),
                                    (cart_pb2.DESCRIPTOR, "CartService"),
                                    (campaign_pb2.DESCRIPTOR, "CampaignService"),
                                     (event_pb2.DESCRIPTOR, "EventService"))]
