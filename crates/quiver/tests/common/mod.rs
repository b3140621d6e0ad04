//! Helpers shared by the tests that run the `quiver` binary.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of these helpers"
)]

pub(crate) mod served;

/// Runs `quiver apply --dir <definitions>` as `quiver` is set up, panicking with its stderr if
/// it fails.
pub(crate) fn apply(mut quiver: std::process::Command, definitions: &std::path::Path) {
    let applied = quiver
        .args(["apply", "--dir"])
        .arg(definitions)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
}

/// A free local TCP port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `quiver` process, killed if the test fails before it stops it.
pub(crate) struct KillOnDrop(pub(crate) Option<std::process::Child>);

impl KillOnDrop {
    /// Panics with the log if the process has exited.
    pub(crate) fn assert_running(&mut self, log: &std::path::Path) {
        if let Some(status) = self.child().try_wait().unwrap() {
            self.0 = None;
            panic!(
                "the process exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    pub(crate) fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("still running")
    }

    pub(crate) fn take(&mut self) -> std::process::Child {
        self.0.take().expect("still running")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The sum of `quiver_ingest_rows_written_total` over views, of the ingester serving metrics on
/// `port`; 0 before it answers.
pub(crate) fn rows_written(port: u16) -> u64 {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        return 0;
    }
    http_get(port, "/metrics")
        .lines()
        .filter(|line| line.starts_with("quiver_ingest_rows_written_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

pub(crate) fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// SIGKILLs `ingester` (serving metrics on `metrics_port`) once it has written `rows` rows;
/// returns how many it had written.
pub(crate) async fn kill_after_rows(
    ingester: &mut KillOnDrop,
    log: &std::path::Path,
    metrics_port: u16,
    rows: u64,
) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        ingester.assert_running(log);
        let written = rows_written(metrics_port);
        if written >= rows {
            ingester.child().kill().expect("SIGKILL");
            ingester.take().wait().unwrap();
            return written;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest made too little progress: {written} rows"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until `group` has committed every record of `topics`, while `ingester` keeps running.
pub(crate) async fn wait_until_done(
    ingester: &mut KillOnDrop,
    log: &std::path::Path,
    group: &str,
    topics: &[(String, i32)],
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    while !quiver_testkit::committed_to_end(group, topics).await {
        ingester.assert_running(log);
        assert!(
            std::time::Instant::now() < deadline,
            "the ingester did not finish in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
