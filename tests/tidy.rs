//! Tidy checks on the source tree: the architecture invariants in ARCHITECTURE.md, enforced.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_owned()
}

/// Crates that do I/O or pull in a runtime; the domain crate must reach none of them.
const IO_CRATES: [&str; 8] = [
    "tokio", "tonic", "scylla", "rdkafka", "hyper", "axum", "mio", "prost",
];

/// The crates `package` depends on to build and run (not its tests), by name.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--package",
            package,
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        tree.contains(package),
        "unexpected cargo tree output: {tree}"
    );
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn quiver_core_depends_on_no_io_crate() {
    let reached: Vec<String> = normal_dependencies("quiver-core")
        .into_iter()
        .filter(|name| IO_CRATES.contains(&name.as_str()))
        .collect();
    assert!(
        reached.is_empty(),
        "quiver-core must not depend on I/O crates, but reaches {reached:?}"
    );
}

/// What is stored has storage types of its own in `quiver-format`; a serializable domain type
/// would let a domain change alter stored bytes unseen.
#[test]
fn quiver_core_types_are_not_serializable() {
    let reached: Vec<String> = normal_dependencies("quiver-core")
        .into_iter()
        .filter(|name| name.starts_with("serde"))
        .collect();
    assert!(
        reached.is_empty(),
        "quiver-core must not depend on serde (stored forms live in quiver-format), but reaches \
         {reached:?}"
    );
}

#[test]
fn the_grpc_server_does_not_link_kafka() {
    let reached: Vec<String> = normal_dependencies("quiver-serve")
        .into_iter()
        .filter(|name| name.starts_with("rdkafka") || name == "quiver-kafka")
        .collect();
    assert!(
        reached.is_empty(),
        "quiver-serve must not depend on Kafka (the binary wires the invalidation listener), \
         but reaches {reached:?}"
    );
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folders are readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target") {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_module_opens_with_a_doc_line_saying_what_it_is_for() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "tests", "benches"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(files.len() > 5, "found only {files:?}");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("a readable source file");
            !text.trim_start().starts_with("//!")
        })
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files must open with a `//!` line saying what they are for: {undocumented:?}"
    );
}
