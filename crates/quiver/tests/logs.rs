//! `--log-format json`: one JSON object per line with the event's structured fields, as a log
//! pipeline (Kubernetes, Loki, Elasticsearch) reads them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::KillOnDrop;

#[test]
fn json_logs_carry_level_message_and_fields() {
    let data = tempfile::tempdir().unwrap();
    let mut server = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["--log-format", "json", "serve", "--store", "embedded"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts"),
    ));
    let stderr = server.0.as_mut().unwrap().stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .next()
        .expect("a log line")
        .unwrap();
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    assert_eq!(event["level"], "INFO", "{line}");
    assert_eq!(event["message"], "serving", "{line}");
    assert_eq!(event["target"], "quiver_serve", "{line}");
    assert!(
        event["address"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1:"),
        "the structured field is its own key: {line}"
    );
    assert!(event["timestamp"].is_string(), "{line}");
}
