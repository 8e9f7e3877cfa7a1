//! The `gpulab` binary as a user runs it: in a directory of its own, with its own home and environment.

use std::process::Output;

use gpulab_testkit::{LabDir, stderr, stdout};

fn gpulab(lab: &LabDir, args: &[&str]) -> Output {
    lab.command(env!("CARGO_BIN_EXE_gpulab").as_ref())
        .args(args)
        .output()
        .expect("run gpulab")
}

/// Run, expect exit code 2, and return stderr after checking it names `field` and `source`.
fn refused(lab: &LabDir, args: &[&str], field: &str, source: &str) -> String {
    let out = gpulab(lab, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: expected exit 2, stderr:\n{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?}: nothing on stdout when refusing"
    );
    assert!(
        err.contains(&format!("{field} = ")),
        "{args:?}: does not name {field}:\n{err}"
    );
    assert!(
        err.contains(&format!("(from {source})")),
        "{args:?}: does not name the source {source}:\n{err}"
    );
    assert!(
        err.contains("allowed: "),
        "{args:?}: does not say what is allowed:\n{err}"
    );
    err
}

#[test]
fn plan_prints_the_default_lab_with_its_cost_and_needs_no_credentials() {
    let lab = LabDir::new();
    let out = gpulab(&lab, &["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "gpu-learning-cluster in us-west-2",
        "g4dn.xlarge",
        "EKS control plane",
        "GPU nodes (g4dn.xlarge, on-demand)",
        "Total",
    ] {
        assert!(text.contains(expected), "plan lacks {expected:?}:\n{text}");
    }
    assert!(
        text.contains("0.5260") && text.contains("0.1000"),
        "GPU node and control plane per hour:\n{text}"
    );
    assert!(
        text.contains("383.98") && text.contains("73.00"),
        "GPU node and control plane per month:\n{text}"
    );
}

#[test]
fn plan_json_carries_the_same_plan() {
    let lab = LabDir::new();
    let table = stdout(&gpulab(&lab, &["plan"]));
    let out = gpulab(&lab, &["plan", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("plan -o json is JSON");
    assert_eq!(plan["instance"]["name"], "g4dn.xlarge");
    assert_eq!(plan["region"], "us-west-2");
    let per_hour = plan["cost"]["per_hour"].as_f64().unwrap();
    assert!(
        table.contains(&format!("{per_hour:.4}")),
        "table and JSON disagree on {per_hour}"
    );
    let items = plan["cost"]["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["item"] == "EKS control plane" && i["per_hour"] == 0.1)
    );
    assert!(
        plan["kubernetes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "DaemonSet")
    );
}

#[test]
fn plan_yaml_is_the_manifests() {
    let out = gpulab(&LabDir::new(), &["plan", "-o", "yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let objects = gpulab_core::manifest::KubeObject::from_yaml_stream(&stdout(&out))
        .expect("YAML of known kinds");
    assert!(
        objects
            .iter()
            .any(|o| o.kind() == "StatefulSet" && o.name() == "gpu-dev-pod")
    );
}

#[test]
fn flags_files_and_environment_reach_the_plan() {
    let lab = LabDir::new()
        .with_env("NODE_TYPE", "g5.xlarge")
        .with_env("CLUSTER_NAME", "env-lab");
    lab.write_config("region = \"us-east-1\"\n[nodes]\ndesired = 2\nmax = 3\n");
    let out = gpulab(&lab, &["plan", "--spot", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (plan["lab"].as_str(), plan["region"].as_str()),
        (Some("env-lab"), Some("us-east-1"))
    );
    assert_eq!(plan["instance"]["name"], "g5.xlarge");
    assert!(
        plan["cost"]["items"][0]["item"]
            .as_str()
            .unwrap()
            .contains("spot")
    );
    assert!(
        plan["cost"]["items"][0]["quantity"]
            .as_str()
            .unwrap()
            .starts_with("2 ×")
    );
}

#[test]
fn an_unknown_node_type_is_refused() {
    let err = refused(
        &LabDir::new(),
        &["plan", "--node-type", "g9.huge"],
        "nodes.instance_type",
        "flag --node-type",
    );
    assert!(
        err.contains("g4dn") && err.contains("gpulab catalog"),
        "{err}"
    );
}

#[test]
fn a_cpu_only_node_type_is_refused() {
    let err = refused(
        &LabDir::new().with_env("NODE_TYPE", "m5.large"),
        &["plan"],
        "nodes.instance_type",
        "env NODE_TYPE",
    );
    assert!(err.contains("has no GPU"), "{err}");
}

#[test]
fn min_above_max_is_refused() {
    let lab = LabDir::new()
        .with_env("MIN_NODES", "3")
        .with_env("MAX_NODES", "2");
    let err = refused(&lab, &["plan"], "nodes.min", "env MIN_NODES");
    assert!(err.contains("greater than nodes.max"), "{err}");
}

#[test]
fn more_gpus_than_the_node_has_is_refused() {
    let err = refused(
        &LabDir::new(),
        &["plan", "--gpus", "4"],
        "workspace.gpus",
        "flag --gpus",
    );
    assert!(err.contains("g4dn.xlarge has 1 GPU"), "{err}");
}

#[test]
fn a_malformed_config_file_is_refused() {
    let lab = LabDir::new();
    let path = lab.write_config("[nodes]\nmin = \"one\"\n");
    let err = refused(&lab, &["plan"], "file", &format!("file {}", path.display()));
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn an_invalid_cluster_name_is_refused() {
    let err = refused(
        &LabDir::new().with_env("CLUSTER_NAME", "my cluster!"),
        &["plan"],
        "name",
        "env CLUSTER_NAME",
    );
    assert!(err.contains("letters, digits"), "{err}");
}

#[test]
fn an_unknown_region_is_refused() {
    let err = refused(
        &LabDir::new(),
        &["plan", "--region", "us-west-9"],
        "region",
        "flag --region",
    );
    assert!(err.contains("us-east-1"), "{err}");
}

#[test]
fn an_unreadable_key_file_is_refused() {
    let lab = LabDir::new().with_env("SSH_KEY", "/nonexistent/id_ed25519.pub");
    let err = refused(&lab, &["plan"], "workspace.ssh_public_key", "env SSH_KEY");
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn all_problems_come_in_one_report() {
    let lab = LabDir::new().with_env("MIN_NODES", "3");
    let out = gpulab(&lab, &["plan", "--region", "nowhere", "--gpus", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid lab spec (3 problems)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_flags_exit_with_2_too() {
    let out = gpulab(&LabDir::new(), &["plan", "--min-nodes", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--min-nodes"));
}

#[test]
fn catalog_filters_by_gpu_memory_and_price() {
    let lab = LabDir::new();
    let t4 = stdout(&gpulab(&lab, &["catalog", "--gpu", "t4"]));
    assert!(t4.contains("g4dn.xlarge") && !t4.contains("g5."), "{t4}");

    let out = gpulab(
        &lab,
        &[
            "catalog",
            "--min-gpu-memory",
            "80",
            "--max-price",
            "20",
            "-o",
            "json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert!(row["price_per_hour"].as_f64().unwrap() <= 20.0, "{row}");
        let total =
            row["gpu_count"].as_u64().unwrap() * row["gpu_model"]["memory_gib"].as_u64().unwrap();
        assert!(total >= 80, "{row}");
    }

    let err = stderr(&gpulab(&lab, &["catalog", "--gpu", "rtx4090"]));
    assert!(err.contains("one of: t4, a10g"), "{err}");
    let gpus = stdout(&gpulab(&lab, &["catalog", "--gpus"]));
    assert!(gpus.contains("H100") && gpus.contains("TFLOP/S"), "{gpus}");
}

#[test]
fn config_show_says_where_each_value_came_from() {
    let lab = LabDir::new().with_env("NODE_TYPE", "g5.xlarge");
    let path = lab.write_config("region = \"eu-west-1\"\n");
    let text = stdout(&gpulab(&lab, &["config", "show", "--min-nodes", "0"]));
    let line = |field: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(field))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("region").contains(&format!("file {}", path.display())),
        "{text}"
    );
    assert!(
        line("nodes.instance_type").contains("env NODE_TYPE"),
        "{text}"
    );
    assert!(line("nodes.min").contains("flag --min-nodes"), "{text}");
    assert!(line("nodes.max").ends_with("default"), "{text}");

    let toml = stdout(&gpulab(&lab, &["config", "show", "-o", "toml"]));
    assert!(toml.contains("region = \"eu-west-1\""), "{toml}");
}

#[test]
fn help_and_completions_work() {
    let lab = LabDir::new();
    let help = stdout(&gpulab(&lab, &["plan", "--help"]));
    assert!(
        help.contains("--node-type") && help.contains("env: NODE_TYPE"),
        "{help}"
    );
    let bash = gpulab(&lab, &["completions", "bash"]);
    assert!(bash.status.success() && stdout(&bash).contains("_gpulab"));
}

/// Without a record of the lab, `down` deletes nothing by name: it refuses before any cloud call (no
/// credentials are set here), saying how to look the lab up by its tags. This is the path that once
/// fell back to "a new AWS lab of that name" and deleted a same-named cluster.
#[test]
fn down_without_a_record_refuses_and_says_how_to_find_the_lab() {
    let lab = LabDir::new().with_env("CLUSTER_NAME", "gpu-learning-cluster");
    let out = gpulab(&lab, &["down", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no lab named gpu-learning-cluster on this machine"),
        "{err}"
    );
    assert!(
        err.contains("gpulab down --name gpu-learning-cluster --region REGION --find-by-tag"),
        "{err}"
    );
    let out = gpulab(
        &lab,
        &["down", "--yes", "--find-by-tag", "--lab-id", "nope"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--lab-id: \"nope\" is not a lab ID"));
}

/// A corrupt record is an error that says how to recover, not "no lab" and never "a new lab".
#[test]
fn down_on_a_corrupt_record_is_an_error() {
    let lab = LabDir::new();
    let dir = lab.gpulab_home().join("labs/broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("state.json"),
        "{\"provider\": {\"kind\": \"gcp\"}}",
    )
    .unwrap();
    let out = gpulab(&lab, &["down", "--name", "broken", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unreadable") && err.contains("--find-by-tag"),
        "{err}"
    );
    // `ls` still lists the other labs, and names the broken one.
    let out = gpulab(&lab, &["ls"]);
    assert!(stderr(&out).contains("broken"), "{}", stderr(&out));
}
