//! `quiver plan` and `quiver apply` against the real CQL server, as an ML engineer runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Workspace {
    keyspace: String,
    edited: PathBuf,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/features")
}

/// A fresh keyspace, and a copy of the examples in which `photo_count` becomes int64.
async fn workspace() -> Workspace {
    let session = quiver_testkit::cql_session().await;
    let keyspace = quiver_testkit::create_keyspace(&session, "cli").await;
    let edited = std::env::temp_dir().join(format!("quiver-cli-{keyspace}"));
    std::fs::create_dir_all(&edited).unwrap();
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    for file in ["entities.yaml", "user_features.yaml"] {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        let text = text
            .replace("../../schemas", &schemas.display().to_string())
            .replace(
                "{name: photo_count, type: int32",
                "{name: photo_count, type: int64",
            );
        std::fs::write(edited.join(file), text).unwrap();
    }
    Workspace { keyspace, edited }
}

fn quiver(workspace: &Workspace, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .args(["--keyspace", &workspace.keyspace, "--consistency", "one"])
        .env("QUIVER_STORE", "scylla")
        .env("QUIVER_CQL_NODES", quiver_testkit::cql_nodes().join(","))
        .output()
        .expect("the quiver binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn apply_twice_then_a_breaking_change_needs_a_new_version() {
    let workspace = workspace().await;
    let examples = examples().display().to_string();
    let edited = workspace.edited.display().to_string();

    let plan = quiver(&workspace, &["plan", "--dir", &examples]);
    assert_eq!(plan.status.code(), Some(3), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("+ feature_view user_profile (version 1)"),
        "{}",
        stdout(&plan)
    );

    let first = quiver(&workspace, &["apply", "--dir", &examples]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("Applied: the registry is at revision 1."),
        "{}",
        stdout(&first)
    );

    let again = quiver(&workspace, &["apply", "--dir", &examples]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(stdout(&again).contains("No changes"), "{}", stdout(&again));
    let plan = quiver(&workspace, &["plan", "--dir", &examples]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));

    let plan = quiver(&workspace, &["plan", "--dir", &edited]);
    assert_eq!(plan.status.code(), Some(4), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("~ feature_view user_profile (version 1 -> 2, needs a new version)"),
        "{}",
        stdout(&plan)
    );
    assert!(stdout(&plan).contains("~ feature photo_count: type int32 -> int64 [breaking]"));

    let refused = quiver(&workspace, &["apply", "--dir", &edited]);
    assert_eq!(refused.status.code(), Some(4), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("refusing breaking changes to feature view `user_profile`"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("--new-version"),
        "{}",
        stderr(&refused)
    );

    let versioned = quiver(&workspace, &["apply", "--dir", &edited, "--new-version"]);
    assert_eq!(versioned.status.code(), Some(0), "{}", stderr(&versioned));
    assert!(
        stdout(&versioned).contains("revision 2"),
        "{}",
        stdout(&versioned)
    );

    let session = quiver_testkit::cql_session().await;
    for table in ["user_profile_v1", "user_profile_v2"] {
        session
            .query_unpaged(
                format!("SELECT * FROM {}.{table} LIMIT 1", workspace.keyspace),
                (),
            )
            .await
            .unwrap_or_else(|error| panic!("{table} is readable: {error}"));
    }
    std::fs::remove_dir_all(&workspace.edited).unwrap();
}

#[tokio::test]
async fn invalid_definitions_stop_before_the_store_is_touched() {
    let workspace = workspace().await;
    let broken = workspace.edited.join("user_features.yaml");
    let text = std::fs::read_to_string(&broken)
        .unwrap()
        .replace("from: country}", "from: countree}");
    std::fs::write(&broken, text).unwrap();

    let output = quiver(
        &workspace,
        &["apply", "--dir", &workspace.edited.display().to_string()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("user_features.yaml:"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("field `countree` not found"),
        "{}",
        stderr(&output)
    );

    let session = quiver_testkit::cql_session().await;
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (&workspace.keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(tables, 0, "nothing was created");
    std::fs::remove_dir_all(&workspace.edited).unwrap();
}

#[tokio::test]
async fn a_missing_keyspace_is_refused_unless_creation_is_asked_for() {
    let _reachable = quiver_testkit::cql_session().await;
    let workspace = Workspace {
        keyspace: quiver_testkit::unique_name("cli_new"),
        edited: PathBuf::new(),
    };
    let examples = examples().display().to_string();
    let refused = quiver(&workspace, &["plan", "--dir", &examples]);
    assert_eq!(refused.status.code(), Some(1));
    for told in ["does not exist", "CREATE KEYSPACE", "--create-keyspace"] {
        assert!(
            stderr(&refused).contains(told),
            "`{told}` missing from: {}",
            stderr(&refused)
        );
    }

    let created = quiver(
        &workspace,
        &["apply", "--dir", &examples, "--create-keyspace"],
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let plan = quiver(&workspace, &["plan", "--dir", &examples]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
}

#[test]
fn an_unreachable_store_is_an_error_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "plan",
            "--dir",
            &examples().display().to_string(),
            "--store",
            "scylla",
            "--cql-nodes",
            "127.0.0.1:1",
            "--cql-timeout-secs",
            "2",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr(&output);
    assert!(stderr.contains("cannot open the online store"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
