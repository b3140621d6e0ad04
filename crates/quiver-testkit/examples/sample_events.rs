//! Writes the quickstart's sample event files, deterministically:
//! `cargo run -p quiver-testkit --example sample_events -- examples/events`.

fn main() -> std::io::Result<()> {
    let folder = std::env::args_os()
        .nth(1)
        .map_or_else(|| "examples/events".into(), std::path::PathBuf::from);
    quiver_testkit::sample::write_sample_files(&folder)
}
