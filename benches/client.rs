//! The Rust client (`quiver_client`) against a running server, one call in flight: the peer
//! that `benches/python/client_bench.py` puts beside the Python client and Feast's, in one run.
//! It prints one JSON line: calls, calls/s, p50 and p99 in microseconds.
//!
//! The driver sets the case in the environment: QUIVER_BENCH_SERVER (url), QUIVER_BENCH_FEATURES
//! ("view:feature" references, comma-separated), QUIVER_BENCH_BATCH (entities per call),
//! QUIVER_BENCH_USERS (keys are drawn uniformly from 0 to this) and QUIVER_BENCH_SECONDS.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark's report is its standard output"
)]

use std::time::{Duration, Instant};

use quiver_client::{Entities, QuiverClient, Selection};

/// Calls before the counted ones: the connection and the server's cache warm up.
const WARM_UP: Duration = Duration::from_millis(500);

struct Case {
    server: String,
    features: Vec<String>,
    batch: usize,
    users: u64,
    seconds: f64,
}

impl Case {
    fn from_env() -> Option<Case> {
        let server = std::env::var("QUIVER_BENCH_SERVER").ok()?;
        let number = |name: &str| -> f64 {
            std::env::var(name)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("{name} is not set to a number"))
        };
        let features = std::env::var("QUIVER_BENCH_FEATURES").unwrap_or_default();
        Some(Case {
            server,
            features: features.split(',').map(str::to_owned).collect(),
            batch: number("QUIVER_BENCH_BATCH") as usize,
            users: number("QUIVER_BENCH_USERS") as u64,
            seconds: number("QUIVER_BENCH_SECONDS"),
        })
    }
}

/// xorshift64: keys drawn uniformly, the same sequence every run.
struct Keys(u64);

impl Keys {
    fn draw(&mut self, users: u64, count: usize) -> Vec<i64> {
        (0..count)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % users) as i64
            })
            .collect()
    }
}

async fn measure(case: &Case) -> Vec<Duration> {
    let mut client = QuiverClient::connect(&case.server)
        .await
        .expect("the bench server answers");
    let mut keys = Keys(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let counted = WARM_UP + Duration::from_secs_f64(case.seconds);
    let mut latencies = Vec::new();
    while started.elapsed() < counted {
        let entities = Entities::new().int64("user_id", keys.draw(case.users, case.batch));
        let call = Instant::now();
        let table = client
            .get(Selection::Features(case.features.clone()), entities)
            .await
            .expect("the bench call succeeds");
        std::hint::black_box(table);
        if started.elapsed() > WARM_UP {
            latencies.push(call.elapsed());
        }
    }
    latencies
}

fn main() {
    let Some(case) = Case::from_env() else {
        println!(
            "the client bench is driven by benches/python/client_bench.py; set \
             QUIVER_BENCH_SERVER and the other QUIVER_BENCH_* variables to run it alone"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let mut latencies = runtime.block_on(measure(&case));
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1e6
    };
    let total: Duration = latencies.iter().sum();
    println!(
        "{}",
        serde_json::json!({
            "client": "rust",
            "batch": case.batch,
            "calls": latencies.len(),
            "calls_per_second": latencies.len() as f64 / total.as_secs_f64(),
            "p50_us": quantile(0.50),
            "p99_us": quantile(0.99),
        })
    );
}
