"""Requests built from Python arguments, shared by the blocking and the asyncio clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from quiver._catalog import FeatureView
from quiver._types import FeatureType, Scalar, Shape
from quiver._values import Key, encode_value, is_missing, key_column, key_scalar, micros_of
from quiver.v1 import feature_service_pb2 as pb

if TYPE_CHECKING:
    import pandas

#: How a reply carries values: one packed array per column (cheaper), or a Value per row.
ValueFormat = Literal["typed", "values"]
#: Rows to push: mappings of key fields, feature values and the event time, or a DataFrame.
Rows: TypeAlias = "Sequence[Mapping[str, object]] | pandas.DataFrame"

_VALUE_FORMATS = {"typed": pb.VALUE_FORMAT_TYPED, "values": pb.VALUE_FORMAT_VALUES}


def entity_columns(
    entities: Mapping[str, Sequence[Key]] | None,
    entity_rows: Sequence[Mapping[str, Key]] | None,
) -> dict[str, list[Key]]:
    """The key columns of a read, from either columns or rows (exactly one of them)."""
    if (entities is None) == (entity_rows is None):
        raise ValueError("give exactly one of `entities` (key columns) and `entity_rows`")
    if entities is not None:
        columns = {name: list(keys) for name, keys in entities.items()}
    else:
        assert entity_rows is not None
        names = list(entity_rows[0]) if entity_rows else []
        columns = {name: [] for name in names}
        for index, row in enumerate(entity_rows):
            if sorted(row) != sorted(names):
                raise ValueError(
                    f"entity row {index} has keys {sorted(row)}, row 0 {sorted(names)}"
                )
            for name in names:
                columns[name].append(row[name])
    if not columns:
        raise ValueError("no entity keys given")
    lengths = {name: len(keys) for name, keys in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"key columns of different lengths: {lengths}")
    return columns


def online_request(
    features: Sequence[str] | None,
    service: str | None,
    columns: Mapping[str, Sequence[Key]],
    key_types: Mapping[str, Scalar],
    value_format: ValueFormat,
) -> pb.GetOnlineFeaturesRequest:
    """A GetOnlineFeatures request for a service or explicit "view:feature" references."""
    if (features is None) == (service is None):
        raise ValueError('give exactly one of `features` ("view:feature" references) and `service`')
    if isinstance(features, str):
        raise TypeError('`features` is a list of "view:feature" references, not one string')
    if value_format not in _VALUE_FORMATS:
        raise ValueError(f'value_format is "typed" or "values", not {value_format!r}')
    request = pb.GetOnlineFeaturesRequest(value_format=_VALUE_FORMATS[value_format])
    if service is not None:
        request.feature_service = service
    else:
        request.feature_list.features.extend(features or [])
    for name, keys in columns.items():
        request.entities[name].CopyFrom(key_column(name, keys, key_types.get(name)))
    return request


def write_request(
    view: FeatureView, view_ref: str, rows: Rows, event_time_column: str
) -> pb.WriteFeaturesRequest:
    """A WriteFeatures request of `rows` for `view`, each value encoded by its declared type."""
    request = pb.WriteFeaturesRequest(feature_view=view_ref)
    for index, row in enumerate(_records(rows)):
        request.rows.append(_feature_row(view, row, event_time_column, f"row {index}"))
    return request


def _feature_row(
    view: FeatureView, row: Mapping[str, object], event_time_column: str, where: str
) -> pb.FeatureRow:
    if is_missing(row.get(event_time_column)):
        raise ValueError(f"{where} has no event time: give `{event_time_column}`")
    wire = pb.FeatureRow(event_time_micros=micros_of(row[event_time_column], where))
    for field in view.keys:
        if field not in row:
            raise ValueError(f"{where} lacks key field `{field}` of entity `{view.entity}`")
        wire.keys[field].CopyFrom(_key_value(field, row[field], view.key_type(field), where))
    for name, value in row.items():
        if name == event_time_column or name in view.keys or is_missing(value):
            continue
        feature_type = view.feature_type(name)
        if feature_type is None:
            raise ValueError(
                f"{where}: `{name}` is neither a feature of view `{view.name}`, a key field of "
                f"entity `{view.entity}`, nor the event time column `{event_time_column}`"
            )
        wire.values[name].CopyFrom(encode_value(value, feature_type, f"{where}, `{name}`"))
    return wire


def _key_value(field: str, value: object, key_type: Scalar | None, where: str) -> pb.Value:
    """One pushed row's key field as a Value, of the type a read would send it as."""
    scalar = key_scalar(field, [value], key_type)
    return encode_value(value, FeatureType(Shape.SCALAR, scalar), f"{where}, key `{field}`")


def _records(rows: Rows) -> list[Mapping[str, object]]:
    """Rows as mappings of plain Python values; a DataFrame's NaN and NaT are missing values."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        frame: Any = rows
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        return [{str(name): _plain(value) for name, value in record.items()} for record in records]
    return list(rows)


def _plain(value: object) -> object:
    """numpy scalars and arrays, as a DataFrame holds them, as Python ones."""
    if type(value).__module__ == "numpy":
        method = getattr(value, "tolist", None)
        if method is not None:
            return method()
    return value
