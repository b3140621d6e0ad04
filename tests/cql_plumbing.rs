//! Plumbing: the scylla driver against the real CQL server, writing cells with event time as
//! the write timestamp, which is the rule Quiver's whole write path relies on.

use scylla::client::session::Session;

async fn country_and_writetime(session: &Session, table: &str, user_id: i64) -> (String, i64) {
    session
        .query_unpaged(
            format!("SELECT country, WRITETIME(country) FROM {table} WHERE user_id = ?"),
            (user_id,),
        )
        .await
        .expect("the read succeeds")
        .into_rows_result()
        .expect("a rows result")
        .single_row::<(String, i64)>()
        .expect("one row with a country and its write time")
}

#[tokio::test]
async fn the_newest_event_time_wins_whatever_the_arrival_order() {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "plumbing").await;
    let table = format!("{keyspace}.user_profile");
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {table} (user_id bigint PRIMARY KEY, country text, photo_count int)"
            ),
            (),
        )
        .await
        .expect("the table is created");

    let write = session
        .prepare(format!(
            "INSERT INTO {table} (user_id, country) VALUES (?, ?) USING TIMESTAMP ?"
        ))
        .await
        .expect("the insert prepares");
    let user_id = 42_i64;
    let newer_micros = 1_790_000_002_000_000_i64;
    let older_micros = 1_790_000_001_000_000_i64;

    session
        .execute_unpaged(&write, (user_id, "SE", newer_micros))
        .await
        .expect("the newer write succeeds");
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("SE".to_owned(), newer_micros),
        "WRITETIME gives back the event time the cell was written with"
    );

    // A late event arrives after the newer one: accepted by the server, but it changes nothing.
    session
        .execute_unpaged(&write, (user_id, "NO", older_micros))
        .await
        .expect("the late write is accepted");
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("SE".to_owned(), newer_micros),
        "an older event time never overwrites a newer value"
    );

    // Replaying the newer event is idempotent, and a later one still wins.
    session
        .execute_unpaged(&write, (user_id, "SE", newer_micros))
        .await
        .expect("the replay is accepted");
    let newest_micros = newer_micros + 1;
    session
        .execute_unpaged(&write, (user_id, "DK", newest_micros))
        .await
        .expect("the newest write succeeds");
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("DK".to_owned(), newest_micros)
    );

    // Timestamps are per cell: another column of the same row keeps its own event time.
    session
        .query_unpaged(
            format!("UPDATE {table} USING TIMESTAMP ? SET photo_count = ? WHERE user_id = ?"),
            (older_micros, 3_i32, user_id),
        )
        .await
        .expect("the photo count is written");
    let (photo_count, photo_writetime) = session
        .query_unpaged(
            format!("SELECT photo_count, WRITETIME(photo_count) FROM {table} WHERE user_id = ?"),
            (user_id,),
        )
        .await
        .expect("the read succeeds")
        .into_rows_result()
        .expect("a rows result")
        .single_row::<(i32, i64)>()
        .expect("one row");
    assert_eq!((photo_count, photo_writetime), (3, older_micros));
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("DK".to_owned(), newest_micros)
    );
}
