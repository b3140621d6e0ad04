//! What a user sees when running the `quiver` binary.

use std::process::Command;

fn quiver(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .output()
        .expect("the quiver binary runs")
}

#[test]
fn version_prints_the_crate_version() {
    let output = quiver(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("quiver {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_says_what_quiver_is() {
    let output = quiver(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("real-time feature store"), "{help}");
    assert!(help.contains("--version"), "{help}");
}

#[test]
fn an_unknown_argument_is_refused_and_named() {
    let output = quiver(&["--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("--frobnicate"), "{error}");
}
