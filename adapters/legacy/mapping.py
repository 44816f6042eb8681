"""The mapping file: which legacy tables and columns become which flashtx entities.

A TOML file with one table per entity (README, "Migrating from a legacy system", has a
complete example). Each entity names its legacy ``table``, an optional SQL ``where``
filter, and ``[entity.columns]``: flashtx field → legacy column, either a column name or
``{ column = "...", scale = N }`` to multiply a number (decimal prices to minor units,
minutes to seconds) and round it to an integer.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ENTITY_FIELDS", "Column", "Entity", "Mapping", "MappingError", "load_mapping",
           "STATUS_NUMBERS"]

# status names a mapping may use → flashtx.v1.OrderStatus numbers; SKIP leaves the order out
STATUS_NUMBERS = {"RESERVED": 1, "PAID": 2, "FULFILLED": 3, "CANCELLED": 4, "EXPIRED": 5,
                  "SKIP": 0}

# entity → (required fields, optional fields); "key" is the legacy key others refer to
ENTITY_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "merchants": (("key", "merchant_id", "name"), ("payment_window_s", "created_at")),
    "customers": (("key", "buyer_id"), ()),
    "skus": (("key", "merchant", "sku_id", "name", "price_minor"),
             ("per_buyer_limit", "updated_at")),
    "stock": (("sku", "available"), ()),
    "orders": (("key", "merchant", "customer", "status", "created_at"),
               ("total_minor", "payment_deadline")),
    "order_lines": (("order", "sku", "quantity", "unit_price_minor"), ("line_no",)),
}
_OPTIONAL_ENTITIES = {"customers", "stock"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


class MappingError(ValueError):
    """The mapping file is malformed; the message names the entry."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    scale: float | None = None

    def sql(self) -> str:
        return f'"{self.name}"'


@dataclass(frozen=True, slots=True)
class Entity:
    name: str
    table: str
    columns: dict[str, Column]
    where: str = ""

    def has(self, field_name: str) -> bool:
        return field_name in self.columns


@dataclass(frozen=True, slots=True)
class Mapping:
    schema: str
    entities: dict[str, Entity]
    status_map: dict[str, int]
    payment_window_s_default: int = 900
    source_path: Path | None = field(default=None, compare=False)

    def entity(self, name: str) -> Entity | None:
        return self.entities.get(name)

    def holding_statuses(self) -> list[str]:
        """Legacy status values whose orders hold stock (reserved, paid or fulfilled)."""
        return [value for value, number in self.status_map.items() if number in (1, 2, 3)]


def load_mapping(path: Path) -> Mapping:
    with path.open("rb") as handle:
        document = tomllib.load(handle)
    mapping = parse_mapping(document)
    return Mapping(mapping.schema, mapping.entities, mapping.status_map,
                   mapping.payment_window_s_default, path)


def parse_mapping(document: dict[str, Any]) -> Mapping:
    source = document.get("source", {})
    schema = _identifier("source.schema", source.get("schema", "public"))
    entities: dict[str, Entity] = {}
    for name in ENTITY_FIELDS:
        if name not in document:
            if name not in _OPTIONAL_ENTITIES:
                raise MappingError(f"[{name}] is required")
            continue
        entities[name] = _entity(name, document[name])
    unknown = set(document) - set(ENTITY_FIELDS) - {"source", "defaults"}
    if unknown:
        raise MappingError(f"unknown sections: {sorted(unknown)}")
    status_map = _status_map(document["orders"].get("status_map", {}))
    window_s = int(document.get("defaults", {}).get("payment_window_s", 900))
    return Mapping(schema, entities, status_map, window_s)


def _entity(name: str, section: dict[str, Any]) -> Entity:
    table = _identifier(f"{name}.table", section.get("table", ""))
    required, optional = ENTITY_FIELDS[name]
    raw_columns = section.get("columns", {})
    columns: dict[str, Column] = {}
    for field_name, spec in raw_columns.items():
        if field_name not in required + optional:
            raise MappingError(f"{name}.columns.{field_name}: not a field of {name}; "
                               f"fields are {', '.join(required + optional)}")
        columns[field_name] = _column(f"{name}.columns.{field_name}", spec)
    missing = [field_name for field_name in required if field_name not in columns]
    if missing:
        raise MappingError(f"{name}.columns: missing {', '.join(missing)}")
    where = section.get("where", "")
    if not isinstance(where, str) or ";" in where:
        raise MappingError(f"{name}.where must be one SQL condition")
    return Entity(name, table, columns, where)


def _column(where: str, spec: Any) -> Column:
    if isinstance(spec, str):
        return Column(_identifier(where, spec))
    if isinstance(spec, dict) and set(spec) <= {"column", "scale"}:
        scale = spec.get("scale")
        if scale is not None and not isinstance(scale, int | float):
            raise MappingError(f"{where}.scale must be a number")
        return Column(_identifier(where, spec.get("column", "")), scale)
    raise MappingError(f'{where}: a column name or {{ column = "...", scale = N }}')


def _status_map(section: dict[str, Any]) -> dict[str, int]:
    if not section:
        raise MappingError("orders.status_map is required (legacy status → flashtx status)")
    result: dict[str, int] = {}
    for legacy, status in section.items():
        if str(status).upper() not in STATUS_NUMBERS:
            raise MappingError(f"orders.status_map.{legacy}: {status!r} is not one of "
                               f"{', '.join(STATUS_NUMBERS)}")
        result[str(legacy)] = STATUS_NUMBERS[str(status).upper()]
    return result


def _identifier(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise MappingError(f"{where}: {value!r} is not a plain SQL identifier")
    return value
