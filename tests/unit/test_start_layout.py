"""A start after `flashtx reshard`: the stock routing table the reshard stored wins over
`stock_shards` (the stock lives on the shards it names), and status says which is used."""

from __future__ import annotations

import pytest

from flashtx.app import EngineStartError, stored_stock_layout
from flashtx.engine.config import Config
from flashtx.engine.sharding import RoutingTable
from flashtx.status import stock_routing_line


def test_no_stored_table_keeps_the_configured_shards() -> None:
    config = Config(stock_shards=2)
    assert stored_stock_layout(config, None) == (config, None)


def test_the_stored_table_wins_over_stock_shards() -> None:
    config = Config(stock_shards=2)
    resharded = RoutingTable.uniform(config.slots_total, 2).move([0, 5, 9], 2)
    chosen, table = stored_stock_layout(config, resharded)
    assert table == resharded and chosen.stock_shards == 3


def test_a_table_for_other_slots_is_refused_in_one_line() -> None:
    config = Config(stock_shards=2)
    with pytest.raises(EngineStartError, match="slots_total") as caught:
        stored_stock_layout(config, RoutingTable.uniform(config.slots_total // 2, 3))
    assert "\n" not in str(caught.value)


def test_status_names_the_table_in_use() -> None:
    assert "stored by a reshard" in stock_routing_line(
        {"version": 3, "shards": 3, "settled": True})
    assert "stored" not in stock_routing_line({"version": 1, "shards": 2, "settled": True})
    assert "not completed" in stock_routing_line({"version": 4, "shards": 4, "settled": False})
