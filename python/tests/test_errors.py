"""Every bad request raises the exception of its kind, with the gRPC code and a message that
says what was wrong; a refused push writes nothing."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import grpc
import pytest

import quiver


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_an_unknown_feature_service_is_not_found(client: quiver.Client) -> None:
    with pytest.raises(quiver.NotFoundError) as raised:
        client.get_online_features(service="nope", entities={"user_id": [1]})
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "feature service `nope` is not in the registry" in raised.value.message
    assert raised.value.method == "GetOnlineFeatures"


def test_an_unknown_feature_is_not_found(client: quiver.Client) -> None:
    with pytest.raises(quiver.NotFoundError, match="missing"):
        client.get_online_features(["every_type:missing"], entities={"user_id": [1]})


def test_a_key_of_the_wrong_type_is_an_invalid_argument(client: quiver.Client) -> None:
    with pytest.raises(quiver.InvalidArgumentError, match="user_id") as raised:
        client.get_online_features(["every_type:string"], entities={"user_id": ["one"]})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_more_entities_than_the_server_allows_is_an_invalid_argument(
    client: quiver.Client,
) -> None:
    with pytest.raises(quiver.InvalidArgumentError, match="1000"):
        client.get_online_features(["every_type:string"], entities={"user_id": list(range(1_001))})


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: every call outlives its
    deadline, however fast the machine (a real server may beat even a 0 s deadline)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_call_past_its_deadline_is_deadline_exceeded(silent_server: str) -> None:
    with quiver.Client(silent_server, timeout=0.2) as client:
        with pytest.raises(quiver.DeadlineExceededError) as raised:
            client.list_feature_views()
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(quiver.DeadlineExceededError):
            client.get_online_features(
                ["every_type:string"], entities={"user_id": ["a"]}, timeout=0.2
            )


def test_a_server_that_is_not_there_is_unavailable() -> None:
    with quiver.Client("127.0.0.1:1", timeout=2.0) as absent:
        with pytest.raises(quiver.UnavailableError):
            absent.list_feature_views()


def test_arguments_that_do_not_make_a_request_are_refused_before_sending(
    client: quiver.Client,
) -> None:
    with pytest.raises(ValueError, match="exactly one of `features`"):
        client.get_online_features(entities={"user_id": [1]})
    with pytest.raises(ValueError, match="exactly one of `entities`"):
        client.get_online_features(["every_type:string"])
    with pytest.raises(ValueError, match="different lengths"):
        client.get_online_features(["every_type:string"], entities={"user_id": [1], "x": [1, 2]})
    with pytest.raises(TypeError, match="not one string"):
        client.get_online_features("every_type:string", entities={"user_id": [1]})
    with pytest.raises(ValueError, match="not a server address"):
        quiver.Client("ftp://127.0.0.1:50051")


def test_a_pushed_value_of_the_wrong_type_names_its_row_and_feature(client: quiver.Client) -> None:
    rows = [
        {"user_id": 7_000, "int64": 1, "event_time": now()},
        {"user_id": 7_001, "int64": "two", "event_time": now()},
    ]
    with pytest.raises(TypeError, match="row 1, `int64`: expected an int for int64, got str 'two'"):
        client.write_features("every_type", rows)
    with pytest.raises(ValueError, match="row 0, `int32`: 4294967296 does not fit in int32"):
        client.write_features(
            "every_type", [{"user_id": 7_002, "int32": 2**32, "event_time": now()}]
        )
    with pytest.raises(ValueError, match="embedding<4> needs 4 elements, got 3"):
        client.write_features(
            "every_type", [{"user_id": 7_003, "embedding_4": [1.0, 2.0, 3.0], "event_time": now()}]
        )
    reply = client.get_online_features(["every_type:int64"], entities={"user_id": [7_000]})
    assert reply["every_type:int64"].statuses == [quiver.FeatureStatus.NOT_FOUND]


def test_a_pushed_row_with_an_unknown_field_or_no_key_or_time_is_refused(
    client: quiver.Client,
) -> None:
    with pytest.raises(
        ValueError, match="row 0: `colour` is neither a feature of view `every_type`"
    ):
        client.write_features("every_type", [{"user_id": 1, "colour": "red", "event_time": now()}])
    with pytest.raises(ValueError, match="row 0 lacks key field `user_id` of entity `user`"):
        client.write_features("every_type", [{"int64": 1, "event_time": now()}])
    with pytest.raises(ValueError, match="row 0 has no event time: give `event_time`"):
        client.write_features("every_type", [{"user_id": 1, "int64": 1}])


def test_a_push_to_an_unknown_view_is_not_found(client: quiver.Client) -> None:
    with pytest.raises(quiver.NotFoundError, match="feature view `nope`"):
        client.write_features("nope", [{"user_id": 1, "event_time": now()}])


def test_a_push_the_server_refuses_writes_none_of_its_rows(client: quiver.Client) -> None:
    good = {"user_id": 7_100, "string": "kept out", "event_time": now()}
    future = {"user_id": 7_101, "string": "too soon", "event_time": now() + timedelta(hours=1)}
    with pytest.raises(quiver.InvalidArgumentError, match="row 1") as raised:
        client.write_features("every_type", [good, future])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    reply = client.get_online_features(["every_type:string"], entities={"user_id": [7_100]})
    assert reply["every_type:string"].statuses == [quiver.FeatureStatus.NOT_FOUND]


def test_an_aggregate_cannot_be_pushed(client: quiver.Client) -> None:
    with pytest.raises(quiver.InvalidArgumentError, match="events_total"):
        client.write_features(
            "every_type", [{"user_id": 7_200, "events_total": 3, "event_time": now()}]
        )


async def test_the_async_client_raises_the_same_exceptions(
    async_client: quiver.AsyncClient,
) -> None:
    with pytest.raises(quiver.NotFoundError, match="feature service `nope`"):
        await async_client.get_online_features(service="nope", entities={"user_id": [1]})
    with pytest.raises(quiver.InvalidArgumentError, match="user_id"):
        await async_client.get_online_features(["every_type:string"], entities={"user_id": ["x"]})
