"""What a read returns: one column per feature, each value with its status and event time,
and its conversions to a dict, a pandas DataFrame and an Arrow table."""

from __future__ import annotations

import enum
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from quiver._types import FeatureType, Scalar, Shape
from quiver._values import FeatureValue, Key, datetime_of, decode_typed, decode_value
from quiver.v1 import feature_service_pb2 as pb

if TYPE_CHECKING:
    import pandas
    import pyarrow

#: Column name suffixes of a feature's status and event time in `to_dict`, `to_pandas` and
#: `to_arrow`: "user_profile:country__status".
STATUS_SUFFIX = "__status"
EVENT_TIME_SUFFIX = "__event_time"


class FeatureStatus(enum.Enum):
    """Whether a value was found, as the server's FeatureStatus says."""

    #: Found, and within the view's TTL; an aggregate evaluated over its window.
    OK = "ok"
    #: Never written for this entity, deleted, or an empty window of min, max, avg, first, last.
    NOT_FOUND = "not_found"
    #: Written, but older than the view's TTL allows.
    EXPIRED = "expired"
    #: The last value read, served because the online store did not answer in time.
    STALE = "stale"
    #: A status this client does not know: the server is newer.
    UNKNOWN = "unknown"


#: The wire statuses whose rows carry a value.
_WITH_VALUE = frozenset({pb.FEATURE_STATUS_OK, pb.FEATURE_STATUS_STALE})
_STATUS_OF_WIRE: dict[int, FeatureStatus] = {
    pb.FEATURE_STATUS_OK: FeatureStatus.OK,
    pb.FEATURE_STATUS_NOT_FOUND: FeatureStatus.NOT_FOUND,
    pb.FEATURE_STATUS_EXPIRED: FeatureStatus.EXPIRED,
    pb.FEATURE_STATUS_STALE: FeatureStatus.STALE,
}


class FeatureColumn:
    """One feature for every entity row of the request, in request order.

    `type` is None only for a column in the Values format of which no row has a value.
    `values[i]` is None where `statuses[i]` carries no value; `event_times[i]` is None where
    there is no event time (no value, or an aggregate over an empty window). Statuses and event
    times are converted from the wire when first asked for, so a caller that reads values only
    pays for values only.
    """

    def __init__(
        self,
        name: str,
        feature_type: FeatureType | None,
        values: list[FeatureValue],
        wire_statuses: Sequence[int],
        event_time_micros: Sequence[int],
        moments: dict[int, datetime] | None = None,
    ) -> None:
        self.name = name
        self.type = feature_type
        self.values = values
        self._wire_statuses = wire_statuses
        #: Microseconds since the Unix epoch per row; 0 where `event_times` has None.
        self.event_time_micros = event_time_micros
        # Shared by the columns of one reply: the features of one view row share event times.
        self._moments = {} if moments is None else moments

    def __repr__(self) -> str:
        return f"FeatureColumn({self.name!r}, {self.type}, {len(self.values)} rows)"

    @cached_property
    def statuses(self) -> list[FeatureStatus]:
        return [
            _STATUS_OF_WIRE.get(status, FeatureStatus.UNKNOWN) for status in self._wire_statuses
        ]

    @cached_property
    def event_times(self) -> list[datetime | None]:
        moments = self._moments
        times: list[datetime | None] = []
        for micros in self.event_time_micros:
            moment = moments.get(micros) if micros else None
            if moment is None and micros:
                moment = moments[micros] = datetime_of(micros)
            times.append(moment)
        return times

    def status_names(self) -> list[str]:
        """The status of each row by name ("ok", "not_found", ...), as `to_dict` gives them."""
        distinct = set(self._wire_statuses)
        if len(distinct) == 1:
            only = _STATUS_OF_WIRE.get(distinct.pop(), FeatureStatus.UNKNOWN)
            return [only.value] * len(self._wire_statuses)
        return [status.value for status in self.statuses]

    @staticmethod
    def from_wire(
        column: pb.FeatureColumn, rows: int, moments: dict[int, datetime]
    ) -> FeatureColumn:
        """A reply's column, in the typed or the Values format, of `rows` rows; `moments` is
        the reply's memo of event times as datetimes."""
        # The reply's own repeated fields, not copies: they live as long as the column.
        statuses, micros = column.statuses, column.event_time_micros
        if len(statuses) != rows or len(micros) != rows:
            raise ValueError(f"the server's column `{column.name}` does not have {rows} rows")
        feature_type: FeatureType | None
        if column.HasField("typed"):
            feature_type, values = decode_typed(column.typed, rows)
        else:
            feature_type, values = _decode_values(column.values, rows, column.name)
        if not _WITH_VALUE.issuperset(statuses):
            values = [
                value if status in _WITH_VALUE else None
                for value, status in zip(values, statuses, strict=True)
            ]
        return FeatureColumn(column.name, feature_type, values, statuses, micros, moments)


def _decode_values(
    wire: Sequence[pb.Value], rows: int, name: str
) -> tuple[FeatureType | None, list[FeatureValue]]:
    if len(wire) != rows:
        raise ValueError(f"the server's column `{name}` holds {len(wire)} values for {rows} rows")
    feature_type: FeatureType | None = None
    values: list[FeatureValue] = []
    for value in wire:
        value_type, decoded = decode_value(value)
        feature_type = feature_type or value_type
        values.append(decoded)
    return feature_type, values


class OnlineFeatures:
    """The reply of `get_online_features`: the entity keys asked for, and a column per feature."""

    def __init__(self, entities: Mapping[str, Sequence[Key]], columns: Sequence[FeatureColumn]):
        self.entities: dict[str, list[Key]] = {name: list(keys) for name, keys in entities.items()}
        self.columns: list[FeatureColumn] = list(columns)

    def __len__(self) -> int:
        """The number of entity rows."""
        return len(next(iter(self.entities.values()), []))

    def __iter__(self) -> Iterator[FeatureColumn]:
        return iter(self.columns)

    def __getitem__(self, feature: str) -> FeatureColumn:
        """The column of `feature`, as "view:feature"."""
        for column in self.columns:
            if column.name == feature:
                return column
        raise KeyError(f"no column `{feature}`; the reply has {[c.name for c in self.columns]}")

    def __repr__(self) -> str:
        return f"OnlineFeatures({len(self)} rows, {[c.name for c in self.columns]})"

    def to_dict(self, *, statuses: bool = True, event_times: bool = True) -> dict[str, list[Any]]:
        """Key columns, then per feature its values, and (unless turned off) its status names
        under "<feature>__status" and event times under "<feature>__event_time"."""
        table: dict[str, list[Any]] = {name: list(keys) for name, keys in self.entities.items()}
        for column in self.columns:
            table[column.name] = list(column.values)
            if statuses:
                table[column.name + STATUS_SUFFIX] = column.status_names()
            if event_times:
                table[column.name + EVENT_TIME_SUFFIX] = list(column.event_times)
        return table

    def to_pandas(self, *, statuses: bool = True, event_times: bool = True) -> pandas.DataFrame:
        """A DataFrame of `to_dict`'s columns, in pandas' nullable dtypes: Int64, Float32,
        boolean, string, datetime64[us, UTC], and object for bytes and lists."""
        _require("pandas", "pandas")
        import pandas

        frame: dict[str, Any] = {name: pandas.array(keys) for name, keys in self.entities.items()}
        for column in self.columns:
            frame[column.name] = _pandas_values(column)
            if statuses:
                names = column.status_names()
                frame[column.name + STATUS_SUFFIX] = pandas.array(names, dtype="string")
            if event_times:
                frame[column.name + EVENT_TIME_SUFFIX] = _pandas_times(column.event_times)
        return pandas.DataFrame(frame)

    def to_arrow(self, *, statuses: bool = True, event_times: bool = True) -> pyarrow.Table:
        """An Arrow table of `to_dict`'s columns, each feature in its declared type (lists as
        list<...>, timestamps as timestamp[us, UTC]), nulls where there is no value."""
        _require("pyarrow", "arrow")
        import pyarrow

        arrays: dict[str, pyarrow.Array[Any]] = {
            name: pyarrow.array(keys) for name, keys in self.entities.items()
        }
        moment = pyarrow.timestamp("us", tz="UTC")
        for column in self.columns:
            arrays[column.name] = pyarrow.array(column.values, type=_arrow_type(column.type))
            if statuses:
                names = column.status_names()
                arrays[column.name + STATUS_SUFFIX] = pyarrow.array(names, type=pyarrow.string())
            if event_times:
                micros = [m or None for m in column.event_time_micros]
                arrays[column.name + EVENT_TIME_SUFFIX] = pyarrow.array(micros, type=moment)
        return pyarrow.table(arrays)


def _require(module: str, extra: str) -> None:
    """Raises an ImportError that says how to install `module` if it is missing."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"this conversion needs {module}: pip install 'quiver-feature-store[{extra}]'"
        )


_PANDAS_DTYPES: dict[Scalar, Any] = {
    Scalar.BOOL: "boolean",
    Scalar.INT32: "Int32",
    Scalar.INT64: "Int64",
    Scalar.FLOAT32: "Float32",
    Scalar.FLOAT64: "Float64",
    Scalar.STRING: "string",
}


def _pandas_values(column: FeatureColumn) -> Any:
    import pandas

    if column.type is None or column.type.shape is not Shape.SCALAR:
        return pandas.array(column.values, dtype=object)
    if column.type.scalar is Scalar.TIMESTAMP:
        return _pandas_times(column.values)
    dtype = _PANDAS_DTYPES.get(column.type.scalar)
    return pandas.array(column.values, dtype=dtype or object)


def _pandas_times(moments: Sequence[object]) -> Any:
    import pandas

    return pandas.to_datetime(pandas.Series(cast(Any, moments), dtype=object), utc=True).dt.as_unit(
        "us"
    )


def _arrow_type(feature_type: FeatureType | None) -> pyarrow.DataType:
    import pyarrow

    if feature_type is None:
        return pyarrow.null()
    scalars: dict[Scalar, pyarrow.DataType] = {
        Scalar.BOOL: pyarrow.bool_(),
        Scalar.INT32: pyarrow.int32(),
        Scalar.INT64: pyarrow.int64(),
        Scalar.FLOAT32: pyarrow.float32(),
        Scalar.FLOAT64: pyarrow.float64(),
        Scalar.STRING: pyarrow.string(),
        Scalar.BYTES: pyarrow.binary(),
        Scalar.TIMESTAMP: pyarrow.timestamp("us", tz="UTC"),
    }
    element = scalars[feature_type.scalar]
    return element if feature_type.shape is Shape.SCALAR else pyarrow.list_(element)
