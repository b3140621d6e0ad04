//! The Helm chart in helm/quiver and the Dockerfile, checked as an SRE would before deploying
//! them: `helm lint`, `helm template` with each values file of helm/quiver/ci, kube-score on what
//! renders, the properties the chart promises (probes, resources, unprivileged pods, secrets
//! only by reference, the ingesters' partition bound), bad values refused by the schema, and the
//! rendered commands accepted by this very binary. The tools come from `scripts/tools.sh install`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value as Json};

const KUBE_VERSION: &str = "1.31.0";
const NAMESPACE: &str = "features";

/// kube-score checks whose findings are accepted, with the reason (also in the closing notes
/// and docs/operations.md).
const ACCEPTED_KUBE_SCORE_CHECKS: [&str; 1] = [
    // Images are pinned by version tag or digest, so IfNotPresent pulls each once; Always would
    // make every pod start depend on the registry being up.
    "container-image-pull-policy",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("helm/quiver")
}

/// A tool installed by scripts/tools.sh; never skipped: a missing tool fails with the fix.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("QUIVER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("quiver/tools")
        });
    let path = dir.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/tools.sh install` first",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with these values files (relative to the chart) and `--set` pairs.
fn template(values: &[&str], set: &[&str]) -> Output {
    let mut command = Command::new(tool("helm"));
    command
        .args(["template", "q", ".", "--namespace", NAMESPACE])
        .args(["--kube-version", KUBE_VERSION])
        .current_dir(chart());
    for file in values {
        command.args(["--values", file]);
    }
    for pair in set {
        command.args(["--set", pair]);
    }
    run(&mut command)
}

/// The rendered objects of a values file that must render.
fn render(values: &str) -> (String, Vec<Json>) {
    let output = template(&[values], &[]);
    assert!(
        output.status.success(),
        "{values} does not render: {}",
        text(&output.stderr)
    );
    let manifests = text(&output.stdout);
    let objects = Yaml::load_from_str(&manifests)
        .expect("helm writes YAML")
        .iter()
        .map(to_json)
        .filter(|object| !object.is_null())
        .collect();
    (manifests, objects)
}

fn to_json(node: &Yaml) -> Json {
    match node {
        Yaml::Value(Scalar::Null) | Yaml::BadValue | Yaml::Alias(_) => Json::Null,
        Yaml::Value(Scalar::Boolean(value)) => Json::Bool(*value),
        Yaml::Value(Scalar::Integer(value)) => Json::from(*value),
        Yaml::Value(Scalar::FloatingPoint(value)) => Json::from(value.into_inner()),
        Yaml::Value(Scalar::String(value)) => Json::String(value.to_string()),
        Yaml::Representation(value, _, _) => Json::String(value.to_string()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match to_json(key) {
                        Json::String(key) => key,
                        other => other.to_string(),
                    };
                    (key, to_json(value))
                })
                .collect::<Map<_, _>>(),
        ),
        Yaml::Tagged(_, inner) => to_json(inner),
    }
}

fn find<'a>(objects: &'a [Json], kind: &str, name: &str) -> &'a Json {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Every pod template (or pod) rendered, with the object's kind and name.
fn pod_specs(objects: &[Json]) -> Vec<(String, &Json)> {
    objects
        .iter()
        .filter_map(|object| {
            let spec = match object["kind"].as_str()? {
                "Deployment" | "Job" => &object["spec"]["template"]["spec"],
                "Pod" => &object["spec"],
                _ => return None,
            };
            Some((
                format!("{} {}", object["kind"], object["metadata"]["name"]),
                spec,
            ))
        })
        .collect()
}

/// The files of the rendered definitions ConfigMap (if any) in a folder, as Kubernetes mounts
/// them into the apply Job.
fn mount_definitions(objects: &[Json]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let definitions = objects.iter().find(|object| {
        object["kind"] == "ConfigMap" && object["metadata"]["name"] == "q-quiver-definitions"
    });
    for (file, content) in definitions
        .into_iter()
        .flat_map(|map| map["data"].as_object().unwrap())
    {
        std::fs::write(dir.path().join(file), content.as_str().unwrap()).unwrap();
    }
    dir
}

const VALUES_FILES: [&str; 3] = [
    "ci/minimal-values.yaml",
    "ci/production-values.yaml",
    "ci/tls-values.yaml",
];

#[test]
fn helm_lint_passes_for_every_values_file() {
    for values in VALUES_FILES {
        let output = run(Command::new(tool("helm"))
            .args(["lint", "--strict", ".", "--values", values])
            .current_dir(chart()));
        assert!(
            output.status.success(),
            "helm lint --strict with {values}:\n{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}

#[test]
fn kube_score_finds_nothing_critical_in_what_renders() {
    for values in VALUES_FILES {
        let (manifests, _) = render(values);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("manifests.yaml");
        std::fs::write(&file, manifests).unwrap();
        let mut command = Command::new(tool("kube-score"));
        command.args(["score", "--output-format", "ci"]);
        for check in ACCEPTED_KUBE_SCORE_CHECKS {
            command.args(["--ignore-test", check]);
        }
        let output = run(command.arg(&file));
        let report = text(&output.stdout);
        let critical: Vec<&str> = report
            .lines()
            .filter(|line| line.starts_with("[CRITICAL]"))
            .collect();
        assert!(
            output.status.success() && critical.is_empty(),
            "kube-score on {values}:\n{}\n{}",
            critical.join("\n"),
            text(&output.stderr)
        );
        assert!(
            report
                .lines()
                .filter(|line| line.starts_with("[OK]"))
                .count()
                > 20,
            "kube-score checked little of {values}:\n{report}"
        );
    }
}

#[test]
fn servers_probe_grpc_health_and_scale_on_cpu() {
    let (_, objects) = render("ci/minimal-values.yaml");
    let serve = find(&objects, "Deployment", "q-quiver-serve");
    let container = &serve["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["readinessProbe"]["grpc"],
        serde_json::json!({"port": 50051, "service": "quiver.v1.FeatureService"})
    );
    assert_eq!(container["livenessProbe"]["grpc"]["port"], 50051);
    assert_eq!(container["startupProbe"]["grpc"]["port"], 50051);
    assert!(
        serve["spec"].get("replicas").is_none(),
        "the HPA owns the replica count"
    );
    let zones: Vec<&Json> = serve["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread constraints")
        .iter()
        .map(|constraint| &constraint["topologyKey"])
        .collect();
    assert_eq!(
        zones,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
    // The grace period outlasts the server's own drain.
    assert_eq!(
        serve["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        15
    );
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&Json::from("--drain-timeout-secs=10"))
    );

    let hpa = find(&objects, "HorizontalPodAutoscaler", "q-quiver-serve");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "q-quiver-serve");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    for component in ["serve", "ingest"] {
        let budget = find(
            &objects,
            "PodDisruptionBudget",
            &format!("q-quiver-{component}"),
        );
        assert_eq!(budget["spec"]["maxUnavailable"], 1, "{component}");
    }
    let service = find(&objects, "Service", "q-quiver-serve");
    assert_eq!(service["spec"]["ports"][0]["name"], "grpc");
    assert_eq!(service["spec"]["ports"][0]["appProtocol"], "grpc");
    let headless = find(&objects, "Service", "q-quiver-serve-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
}

#[test]
fn every_container_has_resources_and_runs_unprivileged_on_a_read_only_root() {
    for values in VALUES_FILES {
        let (_, objects) = render(values);
        let pods = pod_specs(&objects);
        assert!(pods.len() >= 3, "{values}: {pods:?}");
        for (name, pod) in pods {
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
            for container in pod["containers"].as_array().unwrap() {
                let resources = &container["resources"];
                for (kind, resource) in [
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                    ("limits", "ephemeral-storage"),
                ] {
                    assert!(
                        resources[kind][resource].is_string(),
                        "{values}: {name} has no {kind}.{resource}"
                    );
                }
                let security = &container["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["runAsNonRoot"], true, "{name}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn credentials_are_only_referenced_never_inlined() {
    for values in ["ci/production-values.yaml", "ci/tls-values.yaml"] {
        let (_, objects) = render(values);
        assert!(
            !objects.iter().any(|object| object["kind"] == "Secret"),
            "{values}: the chart must not create Secrets"
        );
        let mut referenced = Vec::new();
        for (name, pod) in pod_specs(&objects) {
            for container in pod["containers"].as_array().unwrap() {
                for variable in container["env"].as_array().into_iter().flatten() {
                    let key = variable["name"].as_str().unwrap();
                    if key.ends_with("_PASSWORD") || key.ends_with("_USERNAME") {
                        assert!(
                            variable.get("value").is_none(),
                            "{values}: {name} inlines {key}"
                        );
                        let secret = &variable["valueFrom"]["secretKeyRef"]["name"];
                        referenced.push(secret.as_str().unwrap().to_owned());
                    }
                }
            }
        }
        assert!(
            referenced.contains(&"quiver-scylla-credentials".to_owned()),
            "{values}: {referenced:?}"
        );
        assert!(
            referenced.contains(&"quiver-kafka-credentials".to_owned()),
            "{values}: {referenced:?}"
        );
    }

    // TLS material comes from mounted Secrets, and the binary is pointed at the files.
    let (_, objects) = render("ci/tls-values.yaml");
    let ingest = &find(&objects, "Deployment", "q-quiver-ingest")["spec"]["template"]["spec"];
    let secrets: Vec<&Json> = ingest["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|volume| &volume["secret"]["secretName"])
        .collect();
    assert_eq!(secrets, ["quiver-scylla-tls", "quiver-kafka-ca"]);
    let env = &ingest["containers"][0]["env"];
    let value_of = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(
        value_of("QUIVER_CQL_TLS_KEY_FILE"),
        "/etc/quiver/tls/cql/tls.key"
    );
    assert_eq!(
        value_of("QUIVER_KAFKA_TLS_CA_FILE"),
        "/etc/quiver/tls/kafka/ca.crt"
    );
}

#[test]
fn ingesters_are_bounded_by_the_partition_count() {
    let (_, objects) = render("ci/production-values.yaml");
    let ingest = find(&objects, "Deployment", "q-quiver-ingest");
    assert_eq!(ingest["spec"]["replicas"], 3);
    let guidance = ingest["metadata"]["annotations"]["quiver.dev/replicas-guidance"]
        .as_str()
        .expect("the guidance annotation");
    assert!(guidance.starts_with("At most 6 replicas"), "{guidance}");
    // No surge: a rollout never runs more ingesters than partitions.
    assert_eq!(ingest["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);

    let output = template(&["ci/production-values.yaml"], &["ingest.replicas=7"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("ingest.replicas (7) is more than ingest.partitions (6)"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn bad_values_files_are_refused_naming_the_key() {
    let dir = repo().join("helm/tests/bad-values");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap();
        let expected = content
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its `# expect:` line", file.display()));
        let output = template(&["ci/minimal-values.yaml", file.to_str().unwrap()], &[]);
        assert!(!output.status.success(), "{} was accepted", file.display());
        assert!(
            text(&output.stderr).contains(expected),
            "{}: expected `{expected}` in:\n{}",
            file.display(),
            text(&output.stderr)
        );
    }
}

#[test]
fn definitions_are_applied_by_a_hook_job_and_are_valid() {
    let (_, objects) = render("ci/minimal-values.yaml");
    let definitions = find(&objects, "ConfigMap", "q-quiver-definitions");
    let job = find(&objects, "Job", "q-quiver-apply");
    for object in [definitions, job] {
        assert_eq!(
            object["metadata"]["annotations"]["helm.sh/hook"],
            "pre-install,pre-upgrade"
        );
    }
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["apply", "--dir=/etc/quiver/definitions"])
    );

    // What the Job would apply passes `quiver validate`.
    assert_eq!(definitions["data"].as_object().unwrap().len(), 2);
    let dir = mount_definitions(&objects);
    let output = run(Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["validate", "--dir"])
        .arg(dir.path()));
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    let missing = template(&[], &[]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("definitions.files is empty"),
        "{}",
        text(&missing.stderr)
    );
}

/// The chart and the binary must agree on every flag and environment variable: each rendered
/// container's command is run by this binary with the rendered environment (secrets stand in as
/// placeholders). It must get past argument parsing (exit 2 is a usage error) and fail only
/// where it tries to reach the cluster, which does not exist here.
#[test]
fn the_binary_accepts_every_rendered_command() {
    for values in VALUES_FILES {
        let (_, objects) = render(values);
        let mounted = mount_definitions(&objects);
        for (name, pod) in pod_specs(&objects) {
            let container = &pod["containers"][0];
            let args: Vec<String> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|arg| {
                    arg.as_str()
                        .unwrap()
                        .replace("/etc/quiver/definitions", mounted.path().to_str().unwrap())
                })
                .collect();
            let mut command = Command::new(env!("CARGO_BIN_EXE_quiver"));
            command.args(&args).env_clear();
            for variable in container["env"].as_array().into_iter().flatten() {
                let key = variable["name"].as_str().unwrap();
                let value = variable["value"].as_str().unwrap_or("from-a-secret");
                command.env(key, value);
            }
            // Nothing to wait for: the cluster's names do not resolve here.
            command.env("QUIVER_CQL_TIMEOUT_SECS", "3");
            let output = run(&mut command);
            let stderr = text(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{values}: {name} `quiver {}`:\n{stderr}",
                args.join(" ")
            );
            let reached = [
                "cannot open the online store",
                "CQL TLS CA file /etc/quiver/tls/cql/ca.crt",
                "--kafka-tls-ca-file /etc/quiver/tls/kafka/ca.crt: cannot read it",
                "cannot connect to http://q-quiver-serve",
            ];
            assert!(
                reached.iter().any(|words| stderr.contains(words)),
                "{values}: {name} failed before reaching the cluster:\n{stderr}"
            );
        }
    }
}

#[test]
fn alerts_and_dashboard_use_only_metrics_quiver_exports() {
    let (manifests, _) = render("ci/production-values.yaml");
    let dashboard = std::fs::read_to_string(chart().join("dashboards/quiver.json")).unwrap();
    let dashboard: Json = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
    let exported = [
        "crates/quiver-serve/src/metrics.rs",
        "crates/quiver-ingest/src/metrics.rs",
    ]
    .map(|file| std::fs::read_to_string(repo().join(file)).unwrap())
    .join("\n");
    let used = metric_names(&manifests)
        .into_iter()
        .chain(metric_names(&dashboard.to_string()))
        .collect::<std::collections::BTreeSet<_>>();
    assert!(used.len() >= 10, "{used:?}");
    for metric in used {
        let registered = ["quiver_serve_", "quiver_ingest_"]
            .iter()
            .find_map(|prefix| metric.strip_prefix(prefix))
            .map(|rest| {
                ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| rest.strip_suffix(suffix))
                    .unwrap_or(rest)
            })
            .unwrap_or_else(|| panic!("{metric} is not Quiver's"));
        assert!(
            exported.contains(&format!("\"{registered}\"")),
            "{metric} is used but not registered"
        );
    }
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("quiver_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.starts_with("quiver_serve_") || name.starts_with("quiver_ingest_") {
            names.push(name.clone());
        }
        rest = &rest[start + name.len().max(1)..];
    }
    names
}

#[test]
fn the_dockerfile_builds_in_stages_runs_as_non_root_and_lints_clean() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(
        stages[1].contains("distroless/cc-debian12:nonroot"),
        "{stages:?}"
    );
    let final_stage = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    assert!(
        final_stage.contains("\nUSER 65532:65532\n"),
        "{final_stage}"
    );
    assert!(final_stage.contains("ENTRYPOINT [\"/usr/local/bin/quiver\"]"));

    let lint = |path: &Path| run(Command::new(tool("dockerfilelint")).arg(path));
    let output = lint(&repo().join("Dockerfile"));
    assert!(
        output.status.success() && text(&output.stdout).contains("Issues: None found"),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    // The linter does find problems: an unpinned base image and a prompting apt-get.
    let dir = tempfile::tempdir().unwrap();
    let careless = dir.path().join("Dockerfile");
    std::fs::write(&careless, "FROM debian:latest\nRUN apt-get install curl\n").unwrap();
    assert!(!lint(&careless).status.success());
}

#[test]
fn a_restricted_network_policy_still_admits_the_helm_test_pod() {
    let (_, objects) = render("ci/production-values.yaml");
    let policy = find(&objects, "NetworkPolicy", "q-quiver-serve");
    let grpc = &policy["spec"]["ingress"][0];
    assert_eq!(grpc["ports"][0]["port"], 50051);
    let sources = grpc["from"].as_array().expect("restricted sources");
    assert_eq!(
        sources[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "recommender"
    );
    let test_pod = find(&objects, "Pod", "q-quiver-test-health");
    let test_labels = &test_pod["metadata"]["labels"];
    let admitted = sources.iter().any(|source| {
        source["podSelector"]["matchLabels"]
            .as_object()
            .is_some_and(|wanted| wanted.iter().all(|(key, value)| &test_labels[key] == value))
    });
    assert!(admitted, "{sources:?} does not admit {test_labels}");
}
