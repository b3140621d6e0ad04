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

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features")
}

#[test]
fn validate_accepts_the_examples() {
    let output = quiver(&["validate", "--dir", examples().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("valid: 1 entities, 2 feature views (19 features), 1 feature services"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_errors_with_file_and_line_and_fails() {
    let dir = std::env::temp_dir().join(format!("quiver-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken.yaml"),
        "entities:\n  - name: user\n    keys: [{name: user_id, type: float64}]\n",
    )
    .unwrap();
    let output = quiver(&["validate", "--dir", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.yaml:3:"), "{stderr}");
    assert!(
        stderr.contains("key type `float64` is not allowed"),
        "{stderr}"
    );
}

#[test]
fn validate_help_explains_the_exit_codes() {
    let output = quiver(&["validate", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("--dir <FOLDER>"), "{help}");
}
