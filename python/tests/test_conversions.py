"""`to_pandas` and `to_arrow` keep each feature's declared type, with nulls where no value is."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas
import pyarrow
import pytest

import quiver
from tests.values import EVERY_TYPE, row, sample

USERS = [6_000, 6_001, 6_002]
UNKNOWN_USER = 6_999

ARROW_TYPES: dict[str, pyarrow.DataType] = {
    "bool": pyarrow.bool_(),
    "int32": pyarrow.int32(),
    "int64": pyarrow.int64(),
    "float32": pyarrow.float32(),
    "float64": pyarrow.float64(),
    "string": pyarrow.string(),
    "bytes": pyarrow.binary(),
    "timestamp": pyarrow.timestamp("us", tz="UTC"),
}

PANDAS_DTYPES = {
    "bool": "boolean",
    "int32": "Int32",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
    "string": "string",
    "bytes": "object",
    "timestamp": "datetime64[us, UTC]",
}


def arrow_type(feature_type: str) -> pyarrow.DataType:
    if feature_type.startswith("list<"):
        return pyarrow.list_(ARROW_TYPES[feature_type[len("list<") : -1]])
    if feature_type.startswith("embedding<"):
        return pyarrow.list_(pyarrow.float32())
    return ARROW_TYPES[feature_type]


def read(client: quiver.Client) -> tuple[quiver.OnlineFeatures, datetime]:
    written_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    client.write_features("every_type", [row(user, written_at) for user in USERS])
    reply = client.get_online_features(
        service="every_type_v1", entities={"user_id": [*USERS, UNKNOWN_USER]}
    )
    return reply, written_at


def test_arrow_columns_have_the_declared_types_and_nulls(client: quiver.Client) -> None:
    reply, written_at = read(client)
    table = reply.to_arrow()
    assert table.column("user_id").to_pylist() == [*USERS, UNKNOWN_USER]
    for name, feature_type in EVERY_TYPE:
        column = table.column(f"every_type:{name}")
        assert column.type == arrow_type(feature_type), name
        expected = [sample(feature_type, user) for user in USERS] + [None]
        assert column.to_pylist() == expected, name
        statuses = table.column(f"every_type:{name}__status").to_pylist()
        assert statuses == ["ok", "ok", "ok", "not_found"]
        times = table.column(f"every_type:{name}__event_time")
        assert times.type == pyarrow.timestamp("us", tz="UTC")
        assert times.to_pylist() == [written_at] * 3 + [None]


def test_pandas_columns_have_nullable_dtypes_of_the_declared_types(client: quiver.Client) -> None:
    reply, written_at = read(client)
    frame = reply.to_pandas()
    assert list(frame["user_id"]) == [*USERS, UNKNOWN_USER]
    for name, feature_type in EVERY_TYPE:
        column = frame[f"every_type:{name}"]
        expected_dtype = PANDAS_DTYPES.get(feature_type, "object")
        assert str(column.dtype) == expected_dtype, name
        assert pandas.isna(column.iloc[3]) if expected_dtype != "object" else column.iloc[3] is None
        expected = [sample(feature_type, user) for user in USERS]
        got = [
            value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
            for value in column.iloc[:3]
        ]
        assert got == expected, name
    times = frame["every_type:string__event_time"]
    assert str(times.dtype) == "datetime64[us, UTC]"
    assert list(times.iloc[:3]) == [pandas.Timestamp(written_at)] * 3
    assert pandas.isna(times.iloc[3])
    assert list(frame["every_type:string__status"]) == ["ok", "ok", "ok", "not_found"]


def test_statuses_and_event_times_can_be_left_out(client: quiver.Client) -> None:
    reply, _ = read(client)
    assert list(reply.to_dict(statuses=False, event_times=False)) == ["user_id"] + [
        f"every_type:{name}" for name, _ in EVERY_TYPE
    ]
    assert reply.to_arrow(statuses=False).num_columns == 1 + 2 * len(EVERY_TYPE)


def test_a_dataframe_can_be_pushed(client: quiver.Client) -> None:
    written_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    frame = pandas.DataFrame(
        {
            "user_id": [6_100, 6_101],
            "float64": [0.5, float("nan")],
            "list_string": [["a", "b"], []],
            "event_time": [written_at, written_at],
        }
    )
    result = client.write_features("every_type", frame)
    assert result.rows_written == 2
    reply = client.get_online_features(
        ["every_type:float64", "every_type:list_string"], entities={"user_id": [6_100, 6_101]}
    )
    assert reply["every_type:float64"].values == [0.5, None]
    assert reply["every_type:list_string"].values == [["a", "b"], []]


def test_a_conversion_without_its_library_says_which_extra_to_install(
    client: quiver.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    reply, _ = read(client)
    real_find_spec = importlib.util.find_spec

    def without_pyarrow(name: str, package: str | None = None) -> Any:
        return None if name == "pyarrow" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_pyarrow)
    with pytest.raises(ImportError, match=r"pip install 'quiver-feature-store\[arrow\]'"):
        reply.to_arrow()
    assert len(reply.to_pandas()) == len(USERS) + 1
