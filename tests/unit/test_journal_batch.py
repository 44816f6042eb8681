"""The batch journal's row format (engine/journal_batch.py): any tables round-trip
exactly, nulls included; a damaged, foreign or newer payload is refused; rows of the
wrong shape are refused at encoding."""

from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashtx.engine.journal_batch import (
    VERSION,
    CorruptBatch,
    decode_batch,
    encode_batch,
)

VALUES = {
    "i": st.integers(-2**63, 2**63 - 1),
    "s": st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    "b": st.binary(max_size=12),
    "?": st.booleans(),
}


@st.composite
def tables(draw: st.DrawFn) -> dict[str, tuple[str, list[tuple]]]:
    found = {}
    for name in draw(st.lists(st.sampled_from(["orders", "lines", "events", "carts"]),
                              unique=True, max_size=4)):
        kinds = "".join(draw(st.lists(st.sampled_from("isb?"), min_size=1, max_size=6)))
        rows = draw(st.lists(st.tuples(*(st.one_of(st.none(), VALUES[kind]) if nullable
                                         else VALUES[kind]
                                         for kind, nullable in zip(
                                             kinds, draw(st.lists(st.booleans(),
                                                                  min_size=len(kinds),
                                                                  max_size=len(kinds))),
                                             strict=True))), max_size=20))
        found[name] = (kinds, rows)
    return found


@given(st.integers(0, 2**63 - 1), tables())
def test_any_tables_round_trip(position: int, given_tables: dict) -> None:
    batch = decode_batch(encode_batch(position, given_tables))
    assert batch.position == position
    assert batch.tables == given_tables
    for name, (_, rows) in given_tables.items():
        assert batch.rows(name) == rows
    assert batch.rows("absent") == []


def order_tables(count: int) -> dict[str, tuple[str, list[tuple]]]:
    """Placements as the journal writes them: an order row, its line, its event."""
    orders = [(f"{n:04x}e0e0e0{n:012x}", "shop-1", f"buyer-{n}", f"key-{n}", n % 4096,
               1999, 1_800_000_000_000 + n, 1_800_000_600_000 + n, "k1", "", "USD")
              for n in range(count)]
    lines = [(order[0], 0, "shop-1", "sku-hot", 17, 1, 1999, "") for order in orders]
    events = [(f"{order[0]}:1", "shop-1", "order.placed", order[0], 1, b"\x0a" * 60,
               order[6]) for order in orders]
    return {"orders": ("ssssiiiisss", orders), "lines": ("sissiiis", lines),
            "events": ("ssssibi", events)}


def test_a_batch_of_orders_is_smaller_than_their_pickled_rows() -> None:
    given_tables = order_tables(500)
    payload = encode_batch(7, given_tables)
    assert decode_batch(payload).tables == given_tables
    pickled = pickle.dumps({name: rows for name, (_, rows) in given_tables.items()})
    assert len(payload) < len(pickled)


def test_a_damaged_foreign_or_newer_payload_is_refused() -> None:
    payload = encode_batch(3, order_tables(10))
    damaged = bytearray(payload)
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(CorruptBatch, match="checksum"):
        decode_batch(bytes(damaged))
    with pytest.raises(CorruptBatch, match="magic"):
        decode_batch(b"XXXX" + payload[4:])
    newer = payload[:4] + struct.pack("<H", VERSION + 1) + payload[6:]
    with pytest.raises(CorruptBatch, match="version"):
        decode_batch(newer)
    with pytest.raises(CorruptBatch, match="shorter"):
        decode_batch(payload[:5])


def test_rows_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="a row of 2 values"):
        encode_batch(1, {"orders": ("sis", [("a", 1)])})
    with pytest.raises(ValueError, match="unknown column kinds"):
        encode_batch(1, {"orders": ("sx", [("a", 1)])})
    with pytest.raises(ValueError, match="is not int"):
        encode_batch(1, {"orders": ("si", [("a", "1")])})
    with pytest.raises(ValueError, match="is not int"):  # a bool is not taken for an int
        encode_batch(1, {"orders": ("si", [("a", True)])})
    with pytest.raises(ValueError):
        encode_batch(1, {"orders": ("i", [(2**63,)])})
