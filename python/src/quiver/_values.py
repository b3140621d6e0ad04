"""Python values to and from the wire: entity keys, pushed values, and the columns of a reply."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from quiver._types import FeatureType, Scalar, Shape
from quiver.v1 import feature_service_pb2 as pb

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

#: A key field's value: int for int64 and int32 keys, str or bytes.
Key = int | str | bytes
#: A feature's value as this package gives it: None where the feature has no value.
FeatureValue = (
    bool
    | int
    | float
    | str
    | bytes
    | datetime
    | list[bool]
    | list[int]
    | list[float]
    | list[str]
    | list[bytes]
    | list[datetime]
    | None
)


def datetime_of(micros: int) -> datetime:
    """The UTC moment `micros` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


def micros_of(moment: object, where: str) -> int:
    """Microseconds since the Unix epoch of a datetime (naive ones are taken as UTC) or an int."""
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
        delta = aware - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(moment, int) and not isinstance(moment, bool):
        return moment
    raise TypeError(f"{where}: expected a datetime or microseconds as int, got {_describe(moment)}")


def is_missing(value: object) -> bool:
    """None, and pandas' missing markers (NA, NaT), which a DataFrame row holds for a gap."""
    return value is None or type(value).__name__ in ("NAType", "NaTType")


def key_column(name: str, values: Sequence[object], key_type: Scalar | None) -> pb.KeyColumn:
    """The KeyColumn of key field `name`, of the type `key_scalar` picks."""
    wanted = key_scalar(name, values, key_type)
    python_type = _PYTHON_KEY_TYPES[wanted]
    if all(type(value) is python_type for value in values):
        try:
            return _key_list(wanted, values)
        except ValueError:
            pass  # an int out of range: the loop below names it
    for row, value in enumerate(values):
        _check_scalar(value, wanted, f"key `{name}`, row {row}")
    return _key_list(wanted, values)


def key_scalar(name: str, values: Sequence[object], key_type: Scalar | None) -> Scalar:
    """The type key field `name` is sent as, by its values' type. Python has one int, so ints
    go as int32 where the key is declared so (`key_type`), else as int64; a key of another type
    is the server's to refuse, with its message."""
    wanted = _key_type_of(name, values)
    return Scalar.INT32 if wanted is Scalar.INT64 and key_type is Scalar.INT32 else wanted


_PYTHON_KEY_TYPES: dict[Scalar, type] = {
    Scalar.INT64: int,
    Scalar.INT32: int,
    Scalar.STRING: str,
    Scalar.BYTES: bytes,
}


def _key_list(key_type: Scalar, values: Sequence[object]) -> pb.KeyColumn:
    """The key column of `values`, already checked to be of `key_type`."""
    keys: Any = values
    match key_type:
        case Scalar.INT64:
            return pb.KeyColumn(int64_values=pb.Int64List(values=keys))
        case Scalar.INT32:
            return pb.KeyColumn(int32_values=pb.Int32List(values=keys))
        case Scalar.STRING:
            return pb.KeyColumn(string_values=pb.StringList(values=keys))
        case Scalar.BYTES:
            return pb.KeyColumn(bytes_values=pb.BytesList(values=[bytes(key) for key in keys]))
    raise ValueError(f"a key cannot be {key_type.value}")


def _key_type_of(name: str, values: Sequence[object]) -> Scalar:
    first = values[0] if values else 0
    if isinstance(first, int) and not isinstance(first, bool):
        return Scalar.INT64
    if isinstance(first, str):
        return Scalar.STRING
    if isinstance(first, (bytes, bytearray)):
        return Scalar.BYTES
    raise TypeError(f"key `{name}`: expected int, str or bytes values, got {_describe(first)}")


def encode_value(value: object, feature_type: FeatureType, where: str) -> pb.Value:
    """The wire Value of `value` for a feature of `feature_type`; TypeError or ValueError naming
    `where` when it does not fit."""
    if feature_type.shape is Shape.SCALAR:
        return _encode_scalar(value, feature_type.scalar, where)
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        raise TypeError(f"{where}: expected a list for {feature_type}, got {_describe(value)}")
    items = list(value)
    if feature_type.shape is Shape.EMBEDDING and len(items) != feature_type.dimension:
        raise ValueError(
            f"{where}: {feature_type} needs {feature_type.dimension} elements, got {len(items)}"
        )
    for index, item in enumerate(items):
        _check_scalar(item, feature_type.scalar, f"{where}, element {index}")
    return _encode_list(items, feature_type)


def _encode_scalar(value: object, scalar: Scalar, where: str) -> pb.Value:
    _check_scalar(value, scalar, where)
    match scalar:
        case Scalar.BOOL:
            return pb.Value(bool_value=bool(value))
        case Scalar.INT32:
            return pb.Value(int32_value=cast(int, value))
        case Scalar.INT64:
            return pb.Value(int64_value=cast(int, value))
        case Scalar.FLOAT32:
            return pb.Value(float32_value=_as_float(value))
        case Scalar.FLOAT64:
            return pb.Value(float64_value=_as_float(value))
        case Scalar.STRING:
            return pb.Value(string_value=cast(str, value))
        case Scalar.BYTES:
            return pb.Value(bytes_value=bytes(_as_bytes(value)))
        case Scalar.TIMESTAMP:
            return pb.Value(timestamp_micros_value=micros_of(value, where))


def _encode_list(items: list[object], feature_type: FeatureType) -> pb.Value:
    match feature_type.scalar:
        case Scalar.BOOL:
            return pb.Value(bool_list_value=pb.BoolList(values=[bool(i) for i in items]))
        case Scalar.INT32:
            return pb.Value(int32_list_value=pb.Int32List(values=[cast(int, i) for i in items]))
        case Scalar.INT64:
            return pb.Value(int64_list_value=pb.Int64List(values=[cast(int, i) for i in items]))
        case Scalar.FLOAT32:
            floats = [_as_float(i) for i in items]
            return pb.Value(float32_list_value=pb.Float32List(values=floats))
        case Scalar.FLOAT64:
            floats = [_as_float(i) for i in items]
            return pb.Value(float64_list_value=pb.Float64List(values=floats))
        case Scalar.STRING:
            return pb.Value(string_list_value=pb.StringList(values=[cast(str, i) for i in items]))
        case Scalar.BYTES:
            blobs = [bytes(_as_bytes(i)) for i in items]
            return pb.Value(bytes_list_value=pb.BytesList(values=blobs))
        case Scalar.TIMESTAMP:
            micros = [micros_of(i, "timestamp") for i in items]
            return pb.Value(timestamp_list_value=pb.Int64List(values=micros))


def _check_scalar(value: object, scalar: Scalar, where: str) -> None:
    match scalar:
        case Scalar.BOOL:
            if not isinstance(value, bool):
                raise TypeError(f"{where}: expected a bool, got {_describe(value)}")
        case Scalar.INT32 | Scalar.INT64:
            _check_int(value, scalar, where)
        case Scalar.FLOAT32 | Scalar.FLOAT64:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{where}: expected a float, got {_describe(value)}")
        case Scalar.STRING:
            if not isinstance(value, str):
                raise TypeError(f"{where}: expected a str, got {_describe(value)}")
        case Scalar.BYTES:
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError(f"{where}: expected bytes, got {_describe(value)}")
        case Scalar.TIMESTAMP:
            micros_of(value, where)


def _check_int(value: object, scalar: Scalar, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: expected an int for {scalar.value}, got {_describe(value)}")
    low, high = _INT32 if scalar is Scalar.INT32 else _INT64
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} does not fit in {scalar.value}")


def _as_float(value: object) -> float:
    assert isinstance(value, (int, float))
    return float(value)


def _as_bytes(value: object) -> bytes | bytearray:
    assert isinstance(value, (bytes, bytearray))
    return value


def _describe(value: object) -> str:
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{type(value).__name__} {shown}"


def decode_typed(typed: pb.TypedValues, rows: int) -> tuple[FeatureType, list[FeatureValue]]:
    """A typed column's type and its value per row: scalars, or lists cut at the offsets."""
    which = typed.WhichOneof("elements")
    if which is None:
        raise ValueError("a typed column carries no elements")
    scalar = _SCALAR_OF_ELEMENTS[which]
    elements: list[Any] = list(getattr(typed, which).values)
    if scalar is Scalar.TIMESTAMP:
        elements = [datetime_of(micros) for micros in elements]
    if not typed.offsets:
        if len(elements) != rows:
            raise ValueError(f"a typed column holds {len(elements)} values for {rows} rows")
        return _SCALAR_TYPES[scalar], elements
    offsets = list(typed.offsets)
    if len(offsets) != rows + 1 or offsets[-1] > len(elements):
        raise ValueError(f"a typed column has {len(offsets)} offsets for {rows} rows")
    values: list[FeatureValue] = [elements[start:end] for start, end in itertools.pairwise(offsets)]
    return _LIST_TYPES[scalar], values


#: TypedValues' `elements` fields by name, and the scalar type each holds.
_SCALAR_OF_ELEMENTS = {
    "bool_values": Scalar.BOOL,
    "int32_values": Scalar.INT32,
    "int64_values": Scalar.INT64,
    "float32_values": Scalar.FLOAT32,
    "float64_values": Scalar.FLOAT64,
    "string_values": Scalar.STRING,
    "bytes_values": Scalar.BYTES,
    "timestamp_micros_values": Scalar.TIMESTAMP,
}
_SCALAR_TYPES = {scalar: FeatureType(Shape.SCALAR, scalar) for scalar in Scalar}
_LIST_TYPES = {scalar: FeatureType(Shape.LIST, scalar) for scalar in Scalar}


def decode_value(value: pb.Value) -> tuple[FeatureType | None, FeatureValue]:
    """One Value's type (None when no kind is set) and Python value."""
    match value.WhichOneof("kind"):
        case None:
            return None, None
        case "bool_value":
            return _SCALAR_TYPES[Scalar.BOOL], value.bool_value
        case "int32_value":
            return _SCALAR_TYPES[Scalar.INT32], value.int32_value
        case "int64_value":
            return _SCALAR_TYPES[Scalar.INT64], value.int64_value
        case "float32_value":
            return _SCALAR_TYPES[Scalar.FLOAT32], value.float32_value
        case "float64_value":
            return _SCALAR_TYPES[Scalar.FLOAT64], value.float64_value
        case "string_value":
            return _SCALAR_TYPES[Scalar.STRING], value.string_value
        case "bytes_value":
            return _SCALAR_TYPES[Scalar.BYTES], value.bytes_value
        case "timestamp_micros_value":
            moment = datetime_of(value.timestamp_micros_value)
            return _SCALAR_TYPES[Scalar.TIMESTAMP], moment
        case list_kind:
            return _decode_list(value, list_kind)


def _decode_list(value: pb.Value, kind: str) -> tuple[FeatureType, FeatureValue]:
    match kind:
        case "bool_list_value":
            return _LIST_TYPES[Scalar.BOOL], list(value.bool_list_value.values)
        case "int32_list_value":
            return _LIST_TYPES[Scalar.INT32], list(value.int32_list_value.values)
        case "int64_list_value":
            return _LIST_TYPES[Scalar.INT64], list(value.int64_list_value.values)
        case "float32_list_value":
            return _LIST_TYPES[Scalar.FLOAT32], list(value.float32_list_value.values)
        case "float64_list_value":
            return _LIST_TYPES[Scalar.FLOAT64], list(value.float64_list_value.values)
        case "string_list_value":
            return _LIST_TYPES[Scalar.STRING], list(value.string_list_value.values)
        case "bytes_list_value":
            return _LIST_TYPES[Scalar.BYTES], list(value.bytes_list_value.values)
        case "timestamp_list_value":
            moments = [datetime_of(m) for m in value.timestamp_list_value.values]
            return _LIST_TYPES[Scalar.TIMESTAMP], moments
    raise ValueError(f"a Value of unknown kind `{kind}`: is the server newer than this client?")
