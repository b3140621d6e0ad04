"""Values pushed through WriteFeatures come back unchanged, with their status and event time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import quiver
from tests.values import EVERY_TYPE, row, sample

SERVICE = "every_type_v1"


def recent() -> datetime:
    """An event time the server accepts and the view keeps: a minute ago, to the microsecond."""
    return datetime.now(timezone.utc) - timedelta(minutes=1)


@pytest.mark.parametrize("value_format", ["typed", "values"])
def test_every_feature_type_reads_back_as_written(
    client: quiver.Client, value_format: quiver.ValueFormat
) -> None:
    users = list(range(1_000, 1_012)) if value_format == "typed" else list(range(2_000, 2_012))
    written_at = recent()
    result = client.write_features("every_type", [row(user, written_at) for user in users])
    assert result.rows_written == len(users) and not result.ignored_rows

    reply = client.get_online_features(
        service=SERVICE, entities={"user_id": users}, value_format=value_format
    )

    assert [column.name for column in reply] == [f"every_type:{name}" for name, _ in EVERY_TYPE]
    for name, feature_type in EVERY_TYPE:
        column = reply[f"every_type:{name}"]
        assert column.values == [sample(feature_type, user) for user in users], name
        assert column.statuses == [quiver.FeatureStatus.OK] * len(users), name
        assert column.event_times == [written_at] * len(users), name
        assert str(column.type) == feature_type.replace("embedding<4>", "list<float32>"), name


def test_an_unknown_user_is_not_found_with_no_value_and_no_event_time(
    client: quiver.Client,
) -> None:
    reply = client.get_online_features(
        ["every_type:string", "every_type:list_int64"], entities={"user_id": [987_654_321]}
    )
    for column in reply:
        assert column.values == [None]
        assert column.statuses == [quiver.FeatureStatus.NOT_FOUND]
        assert column.event_times == [None]


def test_entity_rows_give_the_same_reply_as_key_columns(client: quiver.Client) -> None:
    users = [3_000, 3_001, 3_000]
    client.write_features("every_type", [row(user, recent()) for user in users[:2]])
    by_columns = client.get_online_features(service=SERVICE, entities={"user_id": users})
    by_rows = client.get_online_features(
        service=SERVICE, entity_rows=[{"user_id": user} for user in users]
    )
    assert by_rows.to_dict() == by_columns.to_dict()
    assert by_rows["every_type:string"].values == ["s3000", "s3001", "s3000"]


def test_an_int32_key_is_sent_as_its_view_declares_it(client: quiver.Client) -> None:
    written_at = recent()
    client.write_features("shop_stats", [{"shop_id": 7, "rating": 4.5, "event_time": written_at}])
    reply = client.get_online_features(["shop_stats:rating"], entities={"shop_id": [7, 8]})
    assert reply["shop_stats:rating"].values == [4.5, None]
    assert reply["shop_stats:rating"].event_times == [written_at, None]


def test_a_row_older_than_the_stored_one_is_reported_ignored(client: quiver.Client) -> None:
    newer = recent()
    client.write_features("every_type", [{"user_id": 4_000, "string": "new", "event_time": newer}])
    older = newer - timedelta(seconds=30)
    result = client.write_features(
        "every_type", [{"user_id": 4_000, "string": "old", "event_time": older}]
    )
    assert result.rows_written == 0
    assert [(i.row, i.reason) for i in result.ignored_rows] == [(0, "older_than_stored")]
    reply = client.get_online_features(["every_type:string"], entities={"user_id": [4_000]})
    assert reply["every_type:string"].values == ["new"]


def test_an_event_time_may_be_given_in_microseconds(client: quiver.Client) -> None:
    written_at = recent().replace(microsecond=654_321)
    micros = int((written_at - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 10**6
    micros += written_at.microsecond
    client.write_features(
        "every_type",
        [{"user_id": 4_100, "int64": 5, "pushed_at": micros}],
        event_time_column="pushed_at",
    )
    reply = client.get_online_features(["every_type:int64"], entities={"user_id": [4_100]})
    assert reply["every_type:int64"].event_times == [written_at]


def test_the_catalog_lists_views_with_typed_keys_and_services(client: quiver.Client) -> None:
    views = {view.name: view for view in client.list_feature_views()}
    assert sorted(views) == ["every_type", "shop_stats"]
    assert views["shop_stats"].keys == {"shop_id": "int32"}
    assert views["shop_stats"].ttl_seconds == 3_600
    features = {feature.name: feature.type for feature in views["every_type"].features}
    assert features["embedding_4"] == "embedding<4>"
    assert features["events_total"] == "int64"
    services = client.list_feature_services()
    assert [service.name for service in services] == [SERVICE]
    assert services[0].features[0] == "every_type:bool"


async def test_the_async_client_gives_the_same_answers(
    client: quiver.Client, async_client: quiver.AsyncClient
) -> None:
    users = [5_000, 5_001, 5_002]
    written = await async_client.write_features(
        "every_type", [row(user, recent()) for user in users]
    )
    assert written.rows_written == 3
    blocking = client.get_online_features(service=SERVICE, entities={"user_id": users})
    awaited = await async_client.get_online_features(service=SERVICE, entities={"user_id": users})
    assert awaited.to_dict() == blocking.to_dict()
    assert [v.name for v in await async_client.list_feature_views()] == [
        v.name for v in client.list_feature_views()
    ]
    services = await async_client.list_feature_services()
    assert [s.name for s in services] == [SERVICE]
