//! Plumbing: the scylla driver against the real CQL server, writing cells with event time as
//! the write timestamp, which is the rule Quiver's whole write path relies on.
//!
//! Every statement here is a simple (unprepared) query with its values in the text. What is
//! under test is the write-timestamp rule, not preparation: the test Cassandra's 1 MiB statement
//! cache admits a new prepared statement only once it is asked for more often than the one it
//! would evict, so late in the suite a statement prepared once here could be dropped before it
//! ran (the adapters retry that; see `retry_evicted` in quiver-scylla).

use scylla::client::session::Session;

async fn run(session: &Session, statement: String) {
    session
        .query_unpaged(statement.as_str(), ())
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
}

async fn write_country(session: &Session, table: &str, user_id: i64, country: &str, micros: i64) {
    run(
        session,
        format!(
            "INSERT INTO {table} (user_id, country) VALUES ({user_id}, '{country}') \
             USING TIMESTAMP {micros}"
        ),
    )
    .await;
}

async fn column_and_writetime<T>(session: &Session, table: &str, column: &str, user_id: i64) -> T
where
    T: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
{
    session
        .query_unpaged(
            format!("SELECT {column}, WRITETIME({column}) FROM {table} WHERE user_id = {user_id}"),
            (),
        )
        .await
        .expect("the read succeeds")
        .into_rows_result()
        .expect("a rows result")
        .single_row::<T>()
        .expect("one row with the column and its write time")
}

async fn country_and_writetime(session: &Session, table: &str, user_id: i64) -> (String, i64) {
    column_and_writetime(session, table, "country", user_id).await
}

#[tokio::test]
async fn the_newest_event_time_wins_whatever_the_arrival_order() {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "plumbing").await;
    let table = format!("{keyspace}.user_profile");
    run(
        &session,
        format!("CREATE TABLE {table} (user_id bigint PRIMARY KEY, country text, photo_count int)"),
    )
    .await;
    let user_id = 42_i64;
    let newer_micros = 1_790_000_002_000_000_i64;
    let older_micros = 1_790_000_001_000_000_i64;

    write_country(&session, &table, user_id, "SE", newer_micros).await;
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("SE".to_owned(), newer_micros),
        "WRITETIME gives back the event time the cell was written with"
    );

    // A late event arrives after the newer one: accepted by the server, but it changes nothing.
    write_country(&session, &table, user_id, "NO", older_micros).await;
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("SE".to_owned(), newer_micros),
        "an older event time never overwrites a newer value"
    );

    // Replaying the newer event is idempotent, and a later one still wins.
    write_country(&session, &table, user_id, "SE", newer_micros).await;
    let newest_micros = newer_micros + 1;
    write_country(&session, &table, user_id, "DK", newest_micros).await;
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("DK".to_owned(), newest_micros)
    );

    // Timestamps are per cell: another column of the same row keeps its own event time.
    run(
        &session,
        format!(
            "UPDATE {table} USING TIMESTAMP {older_micros} SET photo_count = 3 \
             WHERE user_id = {user_id}"
        ),
    )
    .await;
    let photo: (i32, i64) = column_and_writetime(&session, &table, "photo_count", user_id).await;
    assert_eq!(photo, (3, older_micros));
    assert_eq!(
        country_and_writetime(&session, &table, user_id).await,
        ("DK".to_owned(), newest_micros)
    );
}
