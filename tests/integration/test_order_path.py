"""The order path end to end: real gRPC port, real local Ray cluster (3 stock shards,
2 order shards, 2 gateways on one port)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flashtx_client import Client, FlashtxError
from flashtx_client.v1 import common_pb2, merchant_pb2, order_pb2, stock_pb2
from tests.integration.conftest import add_skus, unique_merchant_id

pytestmark = pytest.mark.cluster

STRONG = common_pb2.READ_CONSISTENCY_STRONG


def order(key: str, buyer: str, *lines: tuple[str, int]) -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        idempotency_key=key, buyer_id=buyer,
        lines=[order_pb2.OrderLine(sku_id=s, quantity=q) for s, q in lines])


async def outcome(client: Client, request: order_pb2.PlaceOrderRequest) -> str:
    try:
        response = await client.orders.PlaceOrder(request)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "REPLAYED" if response.replayed else "OK"


async def level(client: Client, sku_id: str) -> stock_pb2.StockLevel:
    response = await client.stock.GetStock(stock_pb2.GetStockRequest(sku_id=sku_id,
                                                                      consistency=STRONG))
    return response.level


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    detail = dict(error.trailing_metadata())["grpc-status-details-bin"]
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(detail).details[0].Unpack(info)
    return info


def error_reason(error: grpc.aio.AioRpcError) -> str:
    return error_info(error).reason


async def outcome_after_retries(client: Client, request: order_pb2.PlaceOrderRequest) -> str:
    """As a client told RESOURCE_EXHAUSTED does: retry later with the same key."""
    for _ in range(50):
        result = await outcome(client, request)
        if result != "RESOURCE_EXHAUSTED":
            return result
        await asyncio.sleep(0.05)
    return result


async def test_flash_sale_sells_exactly_the_stock(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="hot", name="Hot", price_minor=999, on_hand=100))
    # 1,000 calls at once on one connection, so on one gateway: past its bound on
    # concurrent calls (grpc_concurrent_rpcs_max) some are refused and retried.
    results = await asyncio.gather(*(outcome_after_retries(
        shop, order(f"k{i}", f"b{i}", ("hot", 1))) for i in range(1000)))
    assert Counter(results) == {"OK": 100, "FAILED_PRECONDITION": 900}
    stock = await level(shop, "hot")
    assert (stock.available, stock.reserved, stock.sold) == (0, 100, 0)


async def test_out_of_stock_carries_error_details(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="one", name="One", price_minor=5, on_hand=1))
    assert await outcome(shop, order("k1", "b1", ("one", 1))) == "OK"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.PlaceOrder(order("k2", "b2", ("one", 1)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info.reason == "OUT_OF_STOCK"
    assert dict(info.metadata) == {"sku_id": "one", "available": "0", "requested": "1"}
    # The client reads them for the caller: `except FlashtxError as e: e.reason`.
    refused = caught.value
    assert isinstance(refused, FlashtxError) and refused.reason == "OUT_OF_STOCK"
    assert refused.metadata == {"sku_id": "one", "available": "0", "requested": "1"}


async def test_idempotency_keys(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=1000))
    first = await shop.orders.PlaceOrder(order("same", "b1", ("s", 2)))
    again = await shop.orders.PlaceOrder(order("same", "b1", ("s", 2)))
    assert again.replayed and again.order == first.order
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.PlaceOrder(order("same", "b1", ("s", 3)))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Fifty concurrent retries of one new key: one order, the same for everyone.
    responses = await asyncio.gather(*(shop.orders.PlaceOrder(order("storm", "b2", ("s", 1)))
                                       for _ in range(50)))
    assert len({r.order.order_id for r in responses}) == 1
    assert sum(not r.replayed for r in responses) == 1
    listed = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id="b2"))
    assert [o.order_id for o in listed.orders] == [responses[0].order.order_id]
    assert (await level(shop, "s")).reserved == 3


async def test_per_buyer_limit_holds_under_concurrency(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="ltd", name="Limited", price_minor=5,
                                       on_hand=1000, per_buyer_limit=1))
    results = await asyncio.gather(*(outcome(shop, order(f"try-{i}", "greedy", ("ltd", 1)))
                                     for i in range(50)))
    assert Counter(results) == {"OK": 1, "FAILED_PRECONDITION": 49}
    assert (await level(shop, "ltd")).reserved == 1


async def test_multi_sku_order_is_all_or_nothing_across_shards(shop: Client) -> None:
    skus = [stock_pb2.Sku(sku_id=f"part-{i}", name="Part", price_minor=10, on_hand=5)
            for i in range(8)]
    skus.append(stock_pb2.Sku(sku_id="scarce", name="Scarce", price_minor=10, on_hand=0))
    await add_skus(shop, *skus)
    lines = [(f"part-{i}", 1) for i in range(8)] + [("scarce", 1)]
    assert await outcome(shop, order("multi", "b", *lines)) == "FAILED_PRECONDITION"
    for i in range(8):
        assert (await level(shop, f"part-{i}")).available == 5
    placed = await shop.orders.PlaceOrder(order("multi-ok", "b", *lines[:8]))
    assert placed.order.total_minor == 80 and len(placed.order.lines) == 8
    for i in range(8):
        assert (await level(shop, f"part-{i}")).reserved == 1


async def test_cancel_pay_fulfil_and_refund(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=3))
    placed = (await shop.orders.PlaceOrder(order("a", "b", ("s", 2)))).order
    cancelled = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(
        order_id=placed.order_id))
    assert cancelled.order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert (await level(shop, "s")).available == 3
    placed = (await shop.orders.PlaceOrder(order("b", "b", ("s", 2)))).order
    paid = await shop.orders.PayOrder(order_pb2.PayOrderRequest(order_id=placed.order_id))
    assert paid.order.status == order_pb2.ORDER_STATUS_PAID and paid.order.sequence == 2
    stock = await level(shop, "s")
    assert (stock.reserved, stock.sold, stock.available) == (0, 2, 1)
    refunded = await shop.orders.CancelOrder(order_pb2.CancelOrderRequest(
        order_id=placed.order_id))
    assert refunded.order.refunded and (await level(shop, "s")).available == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.FulfillOrder(order_pb2.FulfillOrderRequest(order_id=placed.order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_payment_deadline_expiry_returns_stock(engine, operator) -> None:
    from flashtx_client.v1 import merchant_pb2

    created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("quick"), name="Quick", payment_window_s=60))
    async with Client(engine.address, created.admin_key_secret) as shop:
        await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=1))
        placed = (await shop.orders.PlaceOrder(order("a", "b", ("s", 1)))).order
        assert (await level(shop, "s")).available == 0
        # The deadline passes on the engine's clock (put back after the test).
        await asyncio.to_thread(engine.topology.shift_clock, 61_000)
        deadline = time.monotonic() + 60
        while True:  # the sweeper expires it on its next round
            current = (await shop.orders.GetOrder(order_pb2.GetOrderRequest(
                order_id=placed.order_id))).order
            if current.status == order_pb2.ORDER_STATUS_EXPIRED:
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.05)
        assert current.status == order_pb2.ORDER_STATUS_EXPIRED
        assert (await level(shop, "s")).available == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await shop.orders.PayOrder(order_pb2.PayOrderRequest(order_id=placed.order_id))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_place_orders_answers_each_item_in_order(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=2))
    first = await shop.orders.PlaceOrder(order("dup", "b0", ("s", 1)))
    batch = [order("n1", "b1", ("s", 1)),  # OK
             order("n2", "b2", ("s", 1)),  # out of stock
             order("dup", "b0", ("s", 1)),  # replay
             order("", "b3", ("s", 1)),  # invalid
             order("n4", "b4", ("missing", 1)),  # unknown SKU
             order("dup", "b0", ("s", 2))]  # idempotency conflict
    response = await shop.orders.PlaceOrders(order_pb2.PlaceOrdersRequest(orders=batch))
    codes = [r.code for r in response.results]
    assert codes == [common_pb2.RESULT_CODE_OK, common_pb2.RESULT_CODE_OUT_OF_STOCK,
                     common_pb2.RESULT_CODE_REPLAYED, common_pb2.RESULT_CODE_INVALID_ARGUMENT,
                     common_pb2.RESULT_CODE_NOT_FOUND,
                     common_pb2.RESULT_CODE_IDEMPOTENCY_CONFLICT]
    assert response.results[0].order.buyer_id == "b1"
    assert response.results[2].order.order_id == first.order.order_id
    assert "idempotency_key" in response.results[3].message
    assert response.results[1].reason == "OUT_OF_STOCK"
    assert dict(response.results[1].metadata) == {"sku_id": "s", "available": "0",
                                                  "requested": "1"}
    assert (await level(shop, "s")).reserved == 2


async def test_place_order_columns_answers_like_place_orders(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=3),
                   stock_pb2.Sku(sku_id="t", name="T", price_minor=7, on_hand=1))
    first = await shop.orders.PlaceOrder(order("dup", "b0", ("s", 1)))
    # n1: s×1 and t×1 (OK); n2: t×1 (out of stock); dup: s×1 (replay); "": invalid;
    # n4: missing×1 (unknown SKU); dup: s×2 (conflict)
    request = order_pb2.PlaceOrderColumnsRequest(
        idempotency_keys=["n1", "n2", "dup", "", "n4", "dup"],
        buyer_ids=["b1", "b2", "b0", "b3", "b4", "b0"], line_counts=[2, 1, 1, 1, 1, 1],
        sku_ids=["s", "t", "t", "s", "s", "missing", "s"], quantities=[1, 1, 1, 1, 1, 1, 2])
    response = await shop.orders.PlaceOrderColumns(request)
    assert list(response.codes) == [
        common_pb2.RESULT_CODE_OK, common_pb2.RESULT_CODE_OUT_OF_STOCK,
        common_pb2.RESULT_CODE_REPLAYED, common_pb2.RESULT_CODE_INVALID_ARGUMENT,
        common_pb2.RESULT_CODE_NOT_FOUND, common_pb2.RESULT_CODE_IDEMPOTENCY_CONFLICT]
    assert response.order_ids[2] == first.order.order_id
    assert response.total_minor[0] == 12 and response.payment_deadline_ms[0] > 0
    assert [bool(i) for i in response.order_ids] == [True, False, True, False, False, False]
    assert response.reasons[1] == "OUT_OF_STOCK"
    assert dict(response.metadata[1].entries) == {"sku_id": "t", "available": "0",
                                                  "requested": "1"}
    assert dict(response.metadata[0].entries) == {}
    assert dict(response.metadata[3].entries) == {"field": "orders[3].idempotency_key"}
    assert "orders[3].idempotency_key" in response.messages[3]
    placed = await shop.orders.GetOrder(order_pb2.GetOrderRequest(
        order_id=response.order_ids[0]))
    assert [(line.sku_id, line.quantity) for line in placed.order.lines] == [("s", 1),
                                                                            ("t", 1)]
    assert (await level(shop, "s")).reserved == 2


async def test_place_order_columns_of_the_wrong_shape_place_nothing(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # 2 lines counted, 1 given
        await shop.orders.PlaceOrderColumns(order_pb2.PlaceOrderColumnsRequest(
            idempotency_keys=["a", "b"], buyer_ids=["x", "y"], line_counts=[1, 1],
            sku_ids=["s"], quantities=[1]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(detail).details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "sku_ids"
    assert (await level(shop, "s")).available == 2


async def test_paging_list_orders_while_orders_are_placed_lists_each_once(
        shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=100))
    existing = set()
    for i in range(7):
        placed = await shop.orders.PlaceOrder(order(f"old{i}", "pager", ("s", 1)))
        existing.add(placed.order.order_id)
    seen: list[str] = []
    token, n = "", 0
    while True:
        page = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(
            buyer_id="pager", page_size=3, page_token=token))
        seen += [o.order_id for o in page.orders]
        for _ in range(2):  # orders placed between pages come before the first page
            n += 1
            await shop.orders.PlaceOrder(order(f"new{n}", "pager", ("s", 1)))
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and existing <= set(seen)
    assert len(seen) == 7  # every order of the first page's time, none placed since
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.ListOrders(order_pb2.ListOrdersRequest(buyer_id="pager",
                                                                 page_token="12"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_input_is_invalid_argument_with_field_and_changes_nothing(
        shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="s", name="S", price_minor=5, on_hand=2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.orders.PlaceOrder(order("k", "b", ("s", 1), ("s", 1)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = dict(caught.value.trailing_metadata())["grpc-status-details-bin"]
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(detail).details[1].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "lines[1].sku_id"
    assert (await level(shop, "s")).available == 2


async def test_stock_levels_snapshot_and_strong(shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="a", name="A", price_minor=5, on_hand=7),
                   stock_pb2.Sku(sku_id="b", name="B", price_minor=5, on_hand=9))
    response = await shop.stock.GetStockLevels(stock_pb2.GetStockLevelsRequest(
        sku_ids=["a", "nope", "b"], consistency=STRONG))
    assert [(lv.sku_id, lv.available) for lv in response.levels] == [("a", 7), ("b", 9)]
    assert list(response.missing_sku_ids) == ["nope"]
    snapshot = await shop.stock.GetStockLevels(stock_pb2.GetStockLevelsRequest(sku_ids=["a"]))
    assert snapshot.levels[0].on_hand == 7
    adjusted = await shop.stock.AdjustStock(stock_pb2.AdjustStockRequest(sku_id="a", delta=-7,
                                                                         reason="damaged"))
    assert adjusted.level.on_hand == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop.stock.AdjustStock(stock_pb2.AdjustStockRequest(sku_id="a", delta=-1))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION



async def test_a_merchants_currency_is_fixed_at_creation_and_recorded_on_its_orders(
        engine, operator) -> None:
    bad = merchant_pb2.CreateMerchantRequest(merchant_id=unique_merchant_id("cur"), name="x",
                                             currency="eur")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.merchants.CreateMerchant(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    created = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("cur"), name="Euro shop", currency="EUR"))
    assert created.merchant.currency == "EUR"
    default = await operator.merchants.CreateMerchant(merchant_pb2.CreateMerchantRequest(
        merchant_id=unique_merchant_id("cur"), name="Default shop"))
    assert default.merchant.currency == "USD"  # the configured default
    async with Client(engine.address, created.admin_key_secret) as euro:
        await add_skus(euro, stock_pb2.Sku(sku_id="a", name="a", price_minor=250, on_hand=5))
        placed = await euro.orders.PlaceOrder(order("k1", "b1", ("a", 1)))
        assert placed.order.currency == "EUR"
        got = await euro.orders.GetOrder(order_pb2.GetOrderRequest(
            order_id=placed.order.order_id))
        assert (got.order.currency, got.order.total_minor) == ("EUR", 250)
        view = await euro.merchants.GetMerchant(merchant_pb2.GetMerchantRequest())
        assert view.merchant.currency == "EUR"
