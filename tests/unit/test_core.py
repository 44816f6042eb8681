"""Configuration, sharding, validation, merchants and the error mapping."""

from __future__ import annotations

import pickle

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from flashtx.adapters.grpc_errors import SCOPES, status_code_of, to_status
from flashtx.engine import errors
from flashtx.engine.config import ConfigError, load_config
from flashtx.engine.merchants import MerchantDirectory, Scope, parse_token
from flashtx.engine.sharding import RoutingTable, slot_of
from flashtx.engine.validation import check_columns, check_id, check_ids, check_order


def test_config_reads_the_environment_and_checks_relationships() -> None:
    config = load_config({"FLASHTX_BATCH_ITEMS_MAX": "500"})
    assert config.batch_items_max == 500
    with pytest.raises(ConfigError):
        load_config({"FLASHTX_BATCH_ITEMS_MAX": "many"})
    with pytest.raises(ConfigError):
        load_config(place_orders_batch_max=9000)
    with pytest.raises(ConfigError):
        load_config(gateway_inflight_max=10)


def test_slots_are_stable_and_routing_moves_slots() -> None:
    assert slot_of("m", "sku-1", 4096) == slot_of("m", "sku-1", 4096)
    table = RoutingTable.uniform(8, 2)
    assert table.shard_of_slot == (0, 1, 0, 1, 0, 1, 0, 1)
    moved = table.move([0, 2], 2)
    assert moved.version == 2 and moved.shard_for(0) == 2 and moved.shard_for(4) == 0
    assert moved.slots_of(2) == [0, 2]


def test_a_mistyped_variable_is_an_error_that_names_the_field(tmp_path) -> None:
    with pytest.raises(ConfigError, match="did you mean FLASHTX_BATCH_ITEMS_MAX"):
        load_config({"FLASHTX_BATCH_ITEM_MAX": "500"})
    # Variables of tools, tests and the admin commands are not engine settings.
    assert load_config({"FLASHTX_TEST_REQUIRE_BUF": "1", "FLASHTX_API_KEY": "k",
                        "FLASHTX_GRPC_ADDRESS": "h:1"})
    assert load_config({"FLASHTX_DATA_DIR": "/x"}).data_dir == "/x"  # a setting like any
    for text, value in (("yes", True), ("ON", True), ("0", False), ("off", False)):
        assert load_config({"FLASHTX_AUTOSCALE": text}).autoscale is value
    with pytest.raises(ConfigError, match="not a boolean"):
        load_config({"FLASHTX_AUTOSCALE": "ja"})


def test_settings_come_from_a_file_and_secrets_from_files(tmp_path) -> None:
    settings = tmp_path / "flashtx.toml"
    settings.write_text('batch_items_max = 300\nredis_url = "none"\n')
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://flashtx:s3cret@db/flashtx\n")
    config = load_config({"FLASHTX_CONFIG_FILE": str(settings),
                          "FLASHTX_BATCH_ITEMS_MAX": "400",  # the environment wins
                          "FLASHTX_POSTGRES_DSN_FILE": str(secret)})
    assert (config.batch_items_max, config.redis_url) == (400, "none")
    assert config.postgres_dsn == "postgresql://flashtx:s3cret@db/flashtx"
    settings.write_text("batch_item_max = 300\n")
    with pytest.raises(ConfigError, match="did you mean batch_items_max"):
        load_config({"FLASHTX_CONFIG_FILE": str(settings)})
    with pytest.raises(ConfigError, match="not both"):
        load_config({"FLASHTX_POSTGRES_DSN_FILE": str(secret), "FLASHTX_POSTGRES_DSN": "x"})


def test_order_validation_names_the_field() -> None:
    config = load_config({})
    assert check_order(config, "", "k", "b", [("z", 1), ("a", 2)]) == (("a", 2), ("z", 1))
    cases = [("", "b", [("a", 1)], "idempotency_key"), ("k", "b c", [("a", 1)], "buyer_id"),
             ("k", "b", [], "lines"), ("k", "b", [("a", 0)], "lines[0].quantity"),
             ("k", "b", [("a", 1), ("a", 2)], "lines[1].sku_id"),
             ("k" * 65, "b", [("a", 1)], "idempotency_key")]
    for key, buyer, lines, field in cases:
        with pytest.raises(errors.InvalidArgument) as caught:
            check_order(config, "orders[3].", key, buyer, lines)
        assert caught.value.field == f"orders[3].{field}"


def test_order_columns_of_the_wrong_shape_name_the_column() -> None:
    config = load_config({})
    check_columns(config, 2, ["x", "y"], [2, 1], ["a", "b", "c"], [1, 1, 1], [])
    check_columns(config, 2, ["x", "y"], [1, 1], ["a", "b"], [1, 1], ["c1", ""])
    cases = [((0, [], [], [], [], []), "idempotency_keys"),
             ((config.place_orders_batch_max + 1, [], [], [], [], []), "idempotency_keys"),
             ((2, ["x"], [1, 1], ["a", "b"], [1, 1], []), "buyer_ids"),
             ((2, ["x", "y"], [1], ["a", "b"], [1, 1], []), "line_counts"),
             ((2, ["x", "y"], [1, 1], ["a", "b"], [1, 1], ["c1"]), "campaign_ids"),
             ((2, ["x", "y"], [2, 1], ["a", "b"], [1, 1, 1], []), "sku_ids"),
             ((2, ["x", "y"], [1, 1], ["a", "b"], [1], []), "quantities")]
    for args, field in cases:
        with pytest.raises(errors.InvalidArgument) as caught:
            check_columns(config, *args)
        assert caught.value.field == field


def test_a_retried_key_creation_answers_the_same_key_with_a_new_secret() -> None:
    directory = MerchantDirectory(10, 5)
    directory.create("shop-1", "Shop", 900, 0)
    first, lost = directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 1, "r1")
    again, token = directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 2, "r1")
    assert again.key_id == first.key_id and len(directory.merchants["shop-1"].keys) == 2
    assert directory.authenticate(token).key_id == first.key_id
    with pytest.raises(errors.Unauthenticated):  # the lost answer's secret stops working
        directory.authenticate(lost)
    with pytest.raises(errors.IdempotencyConflict):  # the same id for another key
        directory.create_key("shop-1", frozenset({Scope.SAAS}), "pos", 3, "r1")


def test_a_retried_merchant_creation_answers_the_same_merchant_with_a_new_secret() -> None:
    directory = MerchantDirectory(10, 5)
    merchant, admin, lost, replayed = directory.create("shop-1", "Shop", 900, 0, 30, "c1")
    assert not replayed
    again, key, token, replayed = directory.create("shop-1", "Shop", 900, 5, 30, "c1")
    assert replayed and again is merchant and key.key_id == admin.key_id
    assert len(merchant.keys) == 1 and directory.authenticate(token).key_id == admin.key_id
    with pytest.raises(errors.Unauthenticated):  # the lost answer's secret stops working
        directory.authenticate(lost)
    for name, window_s, hold_s, request_id in (("Other", 900, 30, "c1"), ("Shop", 60, 30, "c1"),
                                               ("Shop", 900, 0, "c1"), ("Shop", 900, 30, "c2"),
                                               ("Shop", 900, 30, "")):
        with pytest.raises(errors.AlreadyExists):  # another payload, or another request
            directory.create("shop-1", name, window_s, 6, hold_s, request_id)


def test_a_late_retry_never_changes_a_credential_in_use() -> None:
    directory = MerchantDirectory(10, 5)
    _, admin, token, _ = directory.create("shop-1", "Shop", 900, 0, 30, "c1")
    directory.authenticate(token)  # the first answer arrived: the key is in use
    with pytest.raises(errors.AlreadyExists) as caught:
        directory.create("shop-1", "Shop", 900, 5, 30, "c1")
    assert caught.value.metadata["key_id"] == admin.key_id
    assert directory.authenticate(token).key_id == admin.key_id  # still the same secret
    key, channel = directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 6, "r1")
    directory.authenticate(channel)
    with pytest.raises(errors.AlreadyExists):
        directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 7, "r1")
    assert directory.authenticate(channel).key_id == key.key_id
    # Keys loaded from the database may have been used: never rotated by a retry.
    directory.merchants["shop-1"].keys[key.key_id].unused = False
    with pytest.raises(errors.AlreadyExists):
        directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 8, "r1")


def test_keys_authenticate_until_revoked_and_store_only_hashes() -> None:
    directory = MerchantDirectory(10, 5)
    _, admin, token, _ = directory.create("shop-1", "Shop", 900, 0)
    assert directory.authenticate(token).scopes == frozenset({Scope.ADMIN})
    assert token.split(".")[3] not in repr(directory.merchants)
    merchant_id, key_id, _ = parse_token(token)
    assert (merchant_id, key_id) == ("shop-1", admin.key_id)
    with pytest.raises(errors.Unauthenticated):
        directory.authenticate(token[:-1] + ("x" if token[-1] != "x" else "y"))
    directory.revoke_key("shop-1", admin.key_id)
    with pytest.raises(errors.Unauthenticated):
        directory.authenticate(token)
    with pytest.raises(errors.AlreadyExists):
        directory.create("shop-1", "Again", 900, 0)


def test_scopes() -> None:
    directory = MerchantDirectory(10, 5)
    directory.create("shop-1", "Shop", 900, 0)
    _, channel = directory.create_key("shop-1", frozenset({Scope.CHANNEL}), "pos", 0)
    principal = directory.authenticate(channel)
    principal.require(Scope.CHANNEL)
    with pytest.raises(errors.PermissionDenied):
        principal.require(Scope.ADMIN)
    with pytest.raises(errors.PermissionDenied):
        principal.require(Scope.SAAS)


@pytest.mark.parametrize(("error", "code"), [
    (errors.OutOfStock("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.LimitExceeded("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.InvalidTransition("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.IdempotencyConflict("x"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.InvalidArgument("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
    (errors.Overloaded("x", 25), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
])
def test_every_domain_error_maps_to_one_status_with_details(error: errors.DomainError,
                                                            code: grpc.StatusCode) -> None:
    assert status_code_of(error) == code
    status = to_status(error)
    detail = dict(status.trailing_metadata)["grpc-status-details-bin"]
    info = error_details_pb2.ErrorInfo()
    assert status_pb2.Status.FromString(detail).details[0].Unpack(info)
    assert info.reason == error.reason
    # Errors cross Ray process boundaries intact.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy.metadata == error.metadata


def test_list_page_tokens_are_opaque_and_checked() -> None:
    from flashtx.adapters.grpc_service import page_position, page_token

    token = page_token((1_800_000_000_123, "0007abcdef000000009"))
    assert token.startswith("o1.") and "0007" not in token
    assert page_position(token) == (1_800_000_000_123, "0007abcdef000000009")
    past_bigint = page_token((2**63, "0007abcdef000000009"))  # Postgres would refuse it
    for bad in ("20", "o1.", "o1.!!", "o1." + "QQ" * 150, page_token((5, "x"))[:-2] + "@@",
                past_bigint):
        with pytest.raises(errors.InvalidArgument) as caught:
            page_position(bad)
        assert caught.value.field == "page_token"


def test_a_failed_precondition_names_its_subject() -> None:
    status = to_status(errors.OutOfStock("sku a has too few units available (1)",
                                         sku_id="a", available="1", requested="2"))
    detail = status_pb2.Status.FromString(
        dict(status.trailing_metadata)["grpc-status-details-bin"])
    info, failure = error_details_pb2.ErrorInfo(), error_details_pb2.PreconditionFailure()
    assert detail.details[0].Unpack(info) and detail.details[1].Unpack(failure)
    assert dict(info.metadata) == {"sku_id": "a", "available": "1", "requested": "2"}
    [violation] = failure.violations
    assert (violation.type, violation.subject) == ("OUT_OF_STOCK", "sku:a")


def test_every_rpc_has_a_scope() -> None:
    from flashtx_client.v1 import (
        campaign_pb2,
        cart_pb2,
        event_pb2,
        merchant_pb2,
        order_pb2,
        stock_pb2,
    )

    methods = {f"/{service.full_name}/{method.name}"
               for module in (event_pb2, merchant_pb2, order_pb2, stock_pb2, cart_pb2,
                              campaign_pb2)
               for service in module.DESCRIPTOR.services_by_name.values()
               for method in service.methods}
    assert methods == set(SCOPES)


def test_token_bucket_limits_rate_and_says_when_to_retry() -> None:
    from flashtx.engine.ratelimit import TokenBucket

    bucket = TokenBucket.full(rate_per_s=100, burst=10, now_ms=0)
    assert bucket.take(10, 0) == 0  # the burst
    retry_ms = bucket.take(1, 0)
    assert 1 <= retry_ms <= 11
    assert bucket.take(1, retry_ms) == 0  # as promised
    assert bucket.take(5, retry_ms) > 0 and bucket.take(5, retry_ms + 60) == 0
    # More than the burst passes only from a full bucket, and leaves it in debt.
    assert bucket.take(1000, 10_000) == 0
    retry_ms = bucket.take(10, 10_000)
    assert retry_ms == 10_001  # 1,000 tokens owed: 10 s to pay back, then 10 more ms
    assert bucket.take(10, 10_000 + retry_ms - 2) > 0 and bucket.take(10, 10_000 + retry_ms) == 0
    paid = 10_000 + retry_ms
    assert bucket.take(1000, paid + 50) > 0  # 5 tokens: not full, so not yet
    assert bucket.take(1000, paid + 100) == 0  # full again after 100 ms


_ids = st.text(alphabet="ab.-_:@Z9 é\x00", max_size=6)


@given(key=_ids, buyer=_ids,
       lines=st.lists(st.tuples(_ids, st.integers(-1, 12)), max_size=4))
def test_the_fast_order_check_agrees_with_the_field_by_field_one(key, buyer, lines) -> None:
    """check_order's one-pass path answers exactly what the field-by-field checks do."""
    from flashtx.engine.validation import _check_order_fields

    config = load_config(environ={}, id_length_max=4, lines_per_order_max=3, cart_lines_max=3,
                         quantity_per_line_max=10)
    try:
        expected = _check_order_fields(config, "o.", key, buyer, lines)
    except errors.InvalidArgument as error:
        with pytest.raises(errors.InvalidArgument) as raised:
            check_order(config, "o.", key, buyer, lines)
        assert (raised.value.reason, raised.value.message) == (error.reason, error.message)
    else:
        assert check_order(config, "o.", key, buyer, lines) == expected


@given(ids=st.lists(st.text(alphabet="ab.-_:@Z9 é\x00\n", max_size=5), max_size=5))
def test_the_one_pass_id_check_agrees_with_one_check_per_id(ids) -> None:
    """check_ids refuses exactly what check_id refuses, naming the same first field
    (a separator inside an id never passes as two ids)."""
    expected = None
    for i, value in enumerate(ids):
        try:
            check_id(f"ids[{i}]", value, 4)
        except errors.InvalidArgument as error:
            expected = (error.reason, error.message)
            break
    if expected is None:
        check_ids("ids", ids, 4)
    else:
        with pytest.raises(errors.InvalidArgument) as raised:
            check_ids("ids", ids, 4)
        assert (raised.value.reason, raised.value.message) == expected


def test_a_level_entry_is_a_get_stock_answer_and_a_levels_entry() -> None:
    """The snapshot reads' pre-serialized level parses as the message it replaces, alone
    (GetStockResponse) and joined (GetStockLevelsResponse)."""
    from flashtx.adapters.grpc_service import level_message
    from flashtx.adapters.wire import level_entry
    from flashtx.engine.stock import StockLevel
    from flashtx_client.v1 import stock_pb2

    levels = [StockLevel("m", f"s{i}", f"name {i}", 100 + i, 10, 10 - i, i, 0, 2 * i,
                         1_800_000_000_000 + i) for i in range(3)]
    one = stock_pb2.GetStockResponse.FromString(level_entry(levels[0]))
    assert one == stock_pb2.GetStockResponse(level=level_message(levels[0]))
    joined = b"".join(level_entry(level) for level in levels) + (
        stock_pb2.GetStockLevelsResponse(missing_sku_ids=["x"]).SerializeToString())
    assert stock_pb2.GetStockLevelsResponse.FromString(joined) == (
        stock_pb2.GetStockLevelsResponse(levels=[level_message(level) for level in levels],
                                         missing_sku_ids=["x"]))


def test_an_order_event_carries_the_orders_currency() -> None:
    from flashtx.adapters.wire import order_event
    from flashtx.engine.orders import OrderSnapshot
    from flashtx_client.v1 import event_pb2

    order = OrderSnapshot("0007ab000000001", "m", "b", "k", (("a", 1, 250),), 1, 250, 1, 2, 1,
                          False, 1, currency="EUR")
    event = event_pb2.Event.FromString(order_event(order, "order.reserved", 1, 1, False, 1))
    assert (event.order.currency, event.order.total_minor) == ("EUR", 250)


def test_log_settings_are_checked_and_a_failed_call_logs_its_ids() -> None:
    from flashtx.adapters.grpc_errors import _ids
    from flashtx_client.v1 import order_pb2

    assert load_config(environ={"FLASHTX_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        load_config(environ={"FLASHTX_LOG_FORMAT": "yaml"})
    request = order_pb2.PlaceOrderRequest(idempotency_key="k-1", buyer_id="b-1")
    assert _ids("/flashtx.v1.OrderService/PlaceOrder", request) == {
        "rpc": "/flashtx.v1.OrderService/PlaceOrder", "idempotency_key": "k-1",
        "buyer_id": "b-1"}


def test_event_cursors_are_redis_stream_ids() -> None:
    from flashtx.adapters.event_service import is_cursor

    for good in ("0", "0-0", "1733500000000-5", f"{2**64 - 1}-{2**64 - 1}"):
        assert is_cursor(good), good
    for bad in ("1-2-3", "-", "1-", "-1", "a-1", f"{2**64}-0", "1--2", "1-2 ", "1" * 21):
        assert not is_cursor(bad), bad
