"""Sample values of every feature type in tests/definitions, differing by user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

#: Each feature of view `every_type` with its declared type, in declaration order.
EVERY_TYPE = [
    ("bool", "bool"),
    ("int32", "int32"),
    ("int64", "int64"),
    ("float32", "float32"),
    ("float64", "float64"),
    ("string", "string"),
    ("bytes", "bytes"),
    ("timestamp", "timestamp"),
    ("list_bool", "list<bool>"),
    ("list_int32", "list<int32>"),
    ("list_int64", "list<int64>"),
    ("list_float32", "list<float32>"),
    ("list_float64", "list<float64>"),
    ("list_string", "list<string>"),
    ("list_bytes", "list<bytes>"),
    ("list_timestamp", "list<timestamp>"),
    ("embedding_4", "embedding<4>"),
]

BASE_TIME = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)


def sample(feature_type: str, user: int) -> Any:
    """A value of `feature_type` for `user`; lists hold 0, 1 or 2 elements. float32 values are
    quarters, which float32 holds exactly."""
    if feature_type.startswith("list<"):
        element = feature_type[len("list<") : -1]
        return [sample(element, user + k) for k in range(user % 3)]
    if feature_type.startswith("embedding<"):
        return [float(user + k) / 4 for k in range(4)]
    scalars: dict[str, Any] = {
        "bool": user % 2 == 0,
        "int32": -user,
        "int64": user << 33,
        "float32": user / 4,
        "float64": user * 1.5,
        "string": f"s{user}",
        "bytes": bytes([user % 256, 0]),
        "timestamp": BASE_TIME + timedelta(microseconds=user),
    }
    return scalars[feature_type]


def row(user: int, event_time: datetime) -> dict[str, Any]:
    """A pushed row of view `every_type`: every feature set."""
    values = {name: sample(feature_type, user) for name, feature_type in EVERY_TYPE}
    return {"user_id": user, "event_time": event_time, **values}
