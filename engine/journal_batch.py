"""One durable row per group commit: a batch's changes as columns, compact, versioned and
checksummed. The row format of the batch journal, which is being built: the shards do
not write it yet (they write rows per order, actors/persistence.py).

A batch holds tables (orders, their lines, transitions, events, cart writes, settled
sales: whatever the writer names), each a list of rows of equal width. Every column is
stored whole, with its kind, so a reader needs no schema to decode and a materializer
hands columns straight to COPY:

    ``i`` 64-bit integers       ``s`` UTF-8 strings       ``b`` bytes       ``?`` booleans

Any value may be None (a column then carries a null mask). The payload:

    b"FXJB" | version u16 | reserved u16 | CRC-32 of the body u32 | body (msgpack)

and the body ``[position, {table: [kinds, rows, [column, ...]]}]``, a column being
``[encoding, data, null mask]``. A payload whose magic,
version or checksum is wrong is refused (``CorruptBatch``): a damaged row is never taken
for a batch.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

MAGIC = b"FXJB"
VERSION = 1
_HEADER = struct.Struct("<4sHHI")
KINDS = frozenset("isb?")

__all__ = ["MAGIC", "VERSION", "Batch", "CorruptBatch", "decode_batch", "encode_batch"]


class CorruptBatch(ValueError):
    """A payload that is not a batch this code can read: wrong magic, a version it does
    not know, or a checksum that does not match."""


@dataclass(frozen=True)
class Batch:
    """A decoded batch: its journal position and its tables, name -> (kinds, rows)."""

    position: int
    tables: dict[str, tuple[str, list[tuple[Any, ...]]]]

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """The rows of `table` (none when the batch has no such table)."""
        found = self.tables.get(table)
        return found[1] if found is not None else []


def encode_batch(position: int,
                 tables: Mapping[str, tuple[str, Sequence[Sequence[Any]]]]) -> bytes:
    """`tables`: name -> (kinds, rows), one kind letter per column (``i``, ``s``, ``b``,
    ``?``). Raises ValueError for a row of another width, an unknown kind or a value of
    another kind."""
    body: dict[str, list[Any]] = {}
    for name, (kinds, rows) in tables.items():
        if not set(kinds) <= KINDS:
            raise ValueError(f"{name}: unknown column kinds in {kinds!r}")
        width = len(kinds)
        for row in rows:
            if len(row) != width:
                raise ValueError(f"{name}: a row of {len(row)} values, {width} columns")
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
        body[name] = [kinds, len(rows),
                      [_encode_column(name, kind, column)
                       for kind, column in zip(kinds, columns, strict=True)]]
    packed: bytes = msgpack.packb([position, body], use_bin_type=True)
    return _HEADER.pack(MAGIC, VERSION, 0, zlib.crc32(packed)) + packed


def decode_batch(payload: bytes) -> Batch:
    if len(payload) < _HEADER.size:
        raise CorruptBatch(f"{len(payload)} bytes: shorter than a batch's header")
    magic, version, _, crc = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise CorruptBatch(f"not a journal batch (magic {magic!r})")
    if version != VERSION:
        raise CorruptBatch(f"journal batch version {version}; this code reads {VERSION}")
    body = memoryview(payload)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        raise CorruptBatch("journal batch checksum does not match: the row is damaged")
    position, packed_tables = msgpack.unpackb(body, raw=False, strict_map_key=False)
    tables: dict[str, tuple[str, list[tuple[Any, ...]]]] = {}
    for name, (kinds, count, columns) in packed_tables.items():
        values = [_decode_column(kind, count, column)
                  for kind, column in zip(kinds, columns, strict=True)]
        tables[name] = (kinds, list(zip(*values, strict=True)) if values else [])
    return Batch(position, tables)


# --- columns ---------------------------------------------------------------------------------


PLAIN, DICTIONARY = 0, 1  # a column's encoding: its values, or distinct values + indexes


def _encode_column(table: str, kind: str, values: Sequence[Any]) -> list[Any]:
    """[encoding, data, null mask or None]: integers and lengths in the narrowest width
    that holds them, booleans as bits, strings and bytes as one blob (once each when they
    repeat)."""
    mask = None
    nulls = [i for i, value in enumerate(values) if value is None] if (
        None in values) else None  # the containment test first: C speed, no list
    if nulls:
        bits = np.zeros(len(values), dtype=bool)
        bits[nulls] = True
        mask = np.packbits(bits).tobytes()
        values = [_EMPTY[kind] if value is None else value for value in values]
    try:
        if kind == "i":
            data: Any = _narrow(np.fromiter(_exactly(values, int), dtype="<i8",
                                            count=len(values)))
        elif kind == "?":
            data = np.packbits(np.fromiter(_exactly(values, bool), dtype=bool,
                                           count=len(values))).tobytes()
        else:
            checked = list(_exactly(values, str if kind == "s" else bytes))  # a copy
            distinct = dict.fromkeys(checked)
            if len(distinct) * 2 <= len(checked):  # repeated values: each stored once
                index = {value: i for i, value in enumerate(distinct)}
                return [DICTIONARY, [_blob(list(distinct), kind), _narrow(np.fromiter(
                    map(index.__getitem__, checked), dtype="<i8", count=len(checked)))],
                        mask]
            data = _blob(checked, kind)
    except (TypeError, OverflowError) as error:
        raise ValueError(f"{table}: a {kind!r} column: {error}") from error
    return [PLAIN, data, mask]


def _narrow(values: np.ndarray) -> list[Any]:
    """[base, dtype, bytes]: integers stored as their distance from the smallest, in the
    narrowest width that holds them (ids, timestamps and quantities of one batch lie
    close together)."""
    if not len(values):
        return [0, "<i8", b""]
    base = int(values.min())
    spread = int(values.max()) - base
    for dtype in ("<u1", "<u2", "<u4"):
        if spread <= np.iinfo(dtype).max:
            return [base, dtype, (values - base).astype(dtype).tobytes()]
    return [0, "<i8", values.tobytes()]


def _widen(packed: list[Any], count: int) -> np.ndarray:
    base, dtype, data = packed
    values = np.frombuffer(data, dtype=dtype, count=count).astype("<i8")
    return values + base if base else values


def _blob(values: list[Any], kind: str) -> list[Any]:
    """[lengths, joined]: strings (UTF-8) or bytes, one blob and their lengths."""
    parts = [value.encode() for value in values] if kind == "s" else [
        bytes(value) for value in values]
    return [_narrow(np.fromiter(map(len, parts), dtype="<i8", count=len(parts))),
            b"".join(parts)]


def _unblob(packed: list[Any], count: int, kind: str) -> list[Any]:
    lengths = _widen(packed[0], count)
    ends = np.cumsum(lengths)
    view = memoryview(packed[1])
    pairs = zip((ends - lengths).tolist(), ends.tolist(), strict=True)
    if kind == "s":
        return [str(view[a:b], "utf-8") for a, b in pairs]
    return [bytes(view[a:b]) for a, b in pairs]


def _decode_column(kind: str, count: int, column: list[Any]) -> list[Any]:
    encoding, data, mask = column
    values: list[Any]
    if encoding == DICTIONARY:  # repeated strings or bytes: each stored once
        distinct = _unblob(data[0], _distinct_count(data), kind)
        values = [distinct[i] for i in _widen(data[1], count).tolist()]
    elif kind == "i":
        values = _widen(data, count).tolist()
    elif kind == "?":
        values = np.unpackbits(np.frombuffer(data, dtype=np.uint8),
                               count=count).astype(bool).tolist()
    else:
        values = _unblob(data, count, kind)
    if mask is not None:
        nulls = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=count)
        for i in np.flatnonzero(nulls).tolist():
            values[i] = None
    return values


def _distinct_count(data: list[Any]) -> int:
    """How many distinct values a dictionary column holds (its lengths' count)."""
    _, dtype, lengths = data[0][0]
    return len(lengths) // int(np.dtype(dtype).itemsize)


_EMPTY: dict[str, Any] = {"i": 0, "s": "", "b": b"", "?": False}


_BYTES_TYPES = frozenset({bytes, bytearray, memoryview})


def _exactly(values: Sequence[Any], kind: type) -> Sequence[Any]:
    """The values, each checked to be of `kind` (a bool is not an int here, nor an int a
    bool): a row of the wrong shape fails the encoding instead of changing meaning. The
    types are gathered at C speed (`set(map(type, …))`), the values looked at one by one
    only to name the wrong one."""
    allowed = _BYTES_TYPES if kind is bytes else {kind}
    if set(map(type, values)) <= allowed:
        return values
    wrong = next(value for value in values if type(value) not in allowed)
    raise TypeError(f"{wrong!r} is not {kind.__name__}")
