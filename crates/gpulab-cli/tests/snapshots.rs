//! Snapshots of what the `gpulab` binary prints, as a user runs it (in a [`LabDir`]: its own working
//! directory, home, config and environment): for each case, the command line, the exit code, stdout and
//! stderr, in one text block per case under `tests/snapshots/`. `cli.rs` asserts the facts that matter;
//! these catch every other change to the output (wording, alignment, hints, exit codes) for review.
//!
//! Covered: the offline commands (`plan` as table, JSON and YAML, with flags, environment and files;
//! `catalog`; `config show`; `image dockerfile`; `ls` with no labs; `completions`), `--help` of the top
//! level and of every subcommand clap lists (found by reading `gpulab --help` and each command's help,
//! so a new command fails here until its snapshot is accepted), every input-validation error with its
//! exit code, the lab commands on a lab that does not exist, and a whole lab against the Kubernetes
//! emulator as an existing cluster (`up`, `status`, `cost`, `ls`, `exec`, `cp`, `ssh-config`,
//! `stop`/`start`, `test`, `vllm logs`, `slurm setup`, `down`), and `test --local` on this machine. Not covered: the interactive or
//! long-running `ssh`, `forward`, `jupyter` and `vllm serve`, `vllm bench`/`stop`, `slurm run`, and
//! anything on AWS (`up`, `image build`).
//!
//! What varies between runs is redacted before comparing: the lab directory (`[LAB]`), the emulator's
//! pod directory (`[POD_DIR]`), ports, durations, spend since `up`, SSH host keys, cluster IPs,
//! timestamps. The emulator runs the workspace's commands on this machine, so the snapshots of
//! `status`, `test` and `slurm setup` are taken only where this machine has no `nvidia-smi` and no
//! Slurm, and a `python3` without PyTorch or vLLM (as `scripts/test` leaves it); elsewhere `test` is
//! only run. `vllm logs` is snapshot only where this machine has no `/workspace/.gpulab/vllm.log`.
//!
//! To update after an intended change to the output:
//! `INSTA_UPDATE=always cargo test -p gpulab-cli --test snapshots`, then review the diff of
//! `tests/snapshots/` (or `cargo insta review`, if you have cargo-insta) and commit the `.snap` files.
//! With `CI` set, insta writes nothing and a missing or different snapshot fails.

use std::path::Path;
use std::process::{Command, Output};

use gpulab_testkit::LabDir;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};

const GPULAB: &str = env!("CARGO_BIN_EXE_gpulab");

/// Run `gpulab args` as the user of `lab`, stdin not a terminal (empty).
fn run(lab: &LabDir, args: &[&str]) -> Output {
    lab.command(GPULAB.as_ref())
        .args(args)
        .output()
        .expect("run gpulab")
}

/// `arg` as a shell would need it written.
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The case as one text block: the command line (with the environment and gpulab.toml it ran with), the
/// exit code, stdout and stderr; the lab directory's path replaced by `[LAB]`.
fn transcript(lab: &LabDir, args: &[&str], out: &Output) -> String {
    let mut text = String::from("$ ");
    for (var, value) in &lab.env {
        text.push_str(&format!("{var}={} ", quote(value)));
    }
    text.push_str("gpulab");
    for arg in args {
        text.push(' ');
        text.push_str(&quote(arg));
    }
    text.push('\n');
    if let Ok(config) = std::fs::read_to_string(lab.work().join("gpulab.toml")) {
        text.push_str("# with ./gpulab.toml:\n");
        for line in config.lines() {
            text.push_str(&format!("#   {line}\n"));
        }
    }
    let code = out
        .status
        .code()
        .map_or_else(|| format!("killed ({})", out.status), |c| c.to_string());
    text.push_str(&format!(
        "exit: {code}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    let root = lab
        .home()
        .parent()
        .expect("the home is in the lab directory")
        .to_owned();
    text.replace(&root.display().to_string(), "[LAB]")
}

/// insta's settings for this file: snapshots named by case alone, the expression left out (the command
/// line is in the snapshot), and the redactions of what varies between runs.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (regex, replacement) in [
        // Ports of the emulator and of forwards.
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        // Pod uids, in the API server's port-forward errors.
        (
            r"uid [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "uid [UID]",
        ),
        // How long `up` and copies took.
        (r"is up in \d+s", "is up in [N]s"),
        (r#""elapsed": [0-9.e-]+"#, r#""elapsed": [SECONDS]"#),
        (r#"\{\s*"secs": \d+,\s*"nanos": \d+\s*\}"#, "[DURATION]"),
        (
            r"in \d+\.\d+s \(\d+ MiB/s\)",
            "in [SECONDS]s ([RATE] MiB/s)",
        ),
        // Spend since `up`, which grows with every second the lab runs.
        (
            r"\$\d+\.\d+ spent over \d+\.\d+ hours",
            "$[SPENT] spent over [HOURS] hours",
        ),
        (r#""spent": [0-9.e-]+"#, r#""spent": [SPENT]"#),
        (r#""hours": [0-9.e-]+"#, r#""hours": [HOURS]"#),
        // Generated per lab: its ID, the workspace's SSH host key, the service's cluster IP.
        (r#""id": "[0-9a-f]{16}""#, r#""id": "[LAB_ID]""#),
        (
            r"gpulab\.io/lab-id(.{1,6})[0-9a-f]{16}",
            "gpulab.io/lab-id${1}[LAB_ID]",
        ),
        (r"ssh-ed25519 AAAA[A-Za-z0-9+/=]+", "ssh-ed25519 [KEY]"),
        (
            r#""cluster_ip": "10\.100\.\d+\.\d+""#,
            r#""cluster_ip": "[CLUSTER_IP]""#,
        ),
        // Timestamps, in the forms serde gives SystemTime and RFC 3339.
        (
            r#""(secs|nanos)_since_epoch": \d+"#,
            r#""${1}_since_epoch": [T]"#,
        ),
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
            "[TIMESTAMP]",
        ),
    ] {
        settings.add_filter(regex, replacement);
    }
    settings
}

/// Run `gpulab args` in `lab` and compare the transcript with the snapshot `name`; returns the output.
fn snapshot(name: &str, lab: &LabDir, args: &[&str]) -> Output {
    let out = run(lab, args);
    let text = transcript(lab, args, &out);
    settings().bind(|| insta::assert_snapshot!(name, text));
    out
}

#[test]
fn plan() {
    let lab = LabDir::new();
    snapshot("plan", &lab, &["plan"]);
    snapshot("plan_json", &lab, &["plan", "-o", "json"]);
    snapshot("plan_yaml", &lab, &["plan", "-o", "yaml"]);
    snapshot(
        "plan_node_type_and_region",
        &lab,
        &["plan", "--node-type", "g5.xlarge", "--region", "us-east-1"],
    );
    snapshot(
        "plan_load_balancer_time_slicing_tags",
        &lab,
        &[
            "plan",
            "--access",
            "load-balancer",
            "--allow-cidr",
            "203.0.113.7/32",
            "--time-slicing",
            "4",
            "--tag",
            "team=ml",
            "--no-jupyter",
        ],
    );
    // An instance type not offered in the region: no price, a warning, a partial total; -q drops the hint.
    snapshot(
        "plan_spot_unpriced_quiet",
        &lab,
        &[
            "plan",
            "-q",
            "--spot",
            "--region",
            "eu-west-1",
            "--node-type",
            "p5.48xlarge",
        ],
    );

    let lab = LabDir::new()
        .with_env("NODE_TYPE", "g5.xlarge")
        .with_env("CLUSTER_NAME", "env-lab");
    lab.write_config("region = \"us-east-1\"\n[nodes]\ndesired = 2\nmax = 3\n");
    snapshot("plan_env_file_and_flags", &lab, &["plan", "--spot"]);

    // Autostop and a budget: the agent, its image and its exact permissions.
    let lab = LabDir::new();
    snapshot(
        "plan_autostop_budget",
        &lab,
        &["plan", "--autostop", "1h30m", "--budget", "25"],
    );
}

#[test]
fn catalog() {
    let lab = LabDir::new();
    snapshot("catalog", &lab, &["catalog"]);
    snapshot("catalog_gpu_t4", &lab, &["catalog", "--gpu", "t4"]);
    snapshot(
        "catalog_memory_and_price_json",
        &lab,
        &[
            "catalog",
            "--min-gpu-memory",
            "80",
            "--max-price",
            "40",
            "--region",
            "us-east-1",
            "-o",
            "json",
        ],
    );
    snapshot(
        "catalog_no_match",
        &lab,
        &["catalog", "--max-price", "0.01"],
    );
    snapshot("catalog_gpus", &lab, &["catalog", "--gpus"]);
    snapshot(
        "catalog_gpus_json",
        &lab,
        &["catalog", "--gpus", "-o", "json"],
    );
}

#[test]
fn config_show() {
    let lab = LabDir::new().with_env("NODE_TYPE", "g5.xlarge");
    lab.write_config("region = \"eu-west-1\"\n");
    snapshot("config_show", &lab, &["config", "show", "--min-nodes", "0"]);
    snapshot("config_show_json", &lab, &["config", "show", "-o", "json"]);
    snapshot("config_show_toml", &lab, &["config", "show", "-o", "toml"]);
}

#[test]
fn no_labs() {
    let lab = LabDir::new();
    snapshot("ls_no_labs", &lab, &["ls"]);
    snapshot("ls_no_labs_json", &lab, &["ls", "-o", "json"]);
    // Commands on a lab this machine has no record of.
    snapshot("status_no_such_lab", &lab, &["status", "--name", "nope"]);
    snapshot("cost_no_such_lab", &lab, &["cost", "--name", "nope"]);
    snapshot(
        "exec_no_such_lab",
        &lab,
        &["exec", "--name", "nope", "--", "true"],
    );
    snapshot("stop_no_such_lab", &lab, &["stop", "--name", "nope"]);
    snapshot("test_no_such_lab", &lab, &["test", "--name", "nope"]);
    snapshot(
        "ssh_config_no_such_lab",
        &lab,
        &["ssh-config", "--name", "nope"],
    );
    std::fs::write(lab.work().join("train.py"), "print('hi')\n").unwrap();
    snapshot(
        "cp_no_such_lab",
        &lab,
        &["cp", "--name", "nope", "train.py", ":/workspace/"],
    );
    snapshot(
        "vllm_serve_no_such_lab",
        &lab,
        &[
            "vllm",
            "serve",
            "--name",
            "nope",
            "Qwen/Qwen2.5-0.5B-Instruct",
        ],
    );
    snapshot(
        "vllm_bench_no_such_lab",
        &lab,
        &["vllm", "bench", "--name", "nope"],
    );
    snapshot(
        "vllm_logs_no_such_lab",
        &lab,
        &["vllm", "logs", "--name", "nope"],
    );
    snapshot(
        "slurm_setup_no_such_lab",
        &lab,
        &["slurm", "setup", "--name", "nope"],
    );
    snapshot(
        "slurm_run_no_such_lab",
        &lab,
        &["slurm", "run", "--name", "nope", "--", "hostname"],
    );
    // Without --name: the lab of the current settings.
    snapshot("status_default_lab", &lab, &["status"]);
}

#[test]
fn image_dockerfile() {
    let lab = LabDir::new();
    snapshot("image_dockerfile", &lab, &["image", "dockerfile"]);
    snapshot(
        "image_dockerfile_slurm_pip_base",
        &lab,
        &[
            "image",
            "dockerfile",
            "--slurm",
            "--pip",
            "vllm==0.6.4",
            "--pip",
            "transformers",
            "--image",
            "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04",
        ],
    );
}

#[test]
fn completions() {
    let lab = LabDir::new();
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let out = run(&lab, &["completions", shell]);
        assert!(out.status.success(), "completions {shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("gpulab") && script.lines().count() > 50,
            "completions {shell} is not a completion script:\n{script}"
        );
        assert!(out.stderr.is_empty(), "completions {shell}: {out:?}");
    }
    // The scripts are long; their first lines show which shell and function they are.
    let out = run(&lab, &["completions", "bash"]);
    let head: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .take(8)
        .map(|l| format!("{l}\n"))
        .collect();
    settings().bind(|| insta::assert_snapshot!("completions_bash_head", head));
}

/// The subcommands `help` lists in its `Commands:` section (without `help` itself).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_of_every_command() {
    let lab = LabDir::new();
    let top = snapshot("help", &lab, &["--help"]);
    let commands = subcommands(&String::from_utf8_lossy(&top.stdout));
    for expected in [
        "plan",
        "up",
        "status",
        "down",
        "catalog",
        "config",
        "completions",
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} not found in `gpulab --help`: {commands:?}"
        );
    }
    // Into nested subcommands too (`config show`, `vllm serve`).
    let mut queue: Vec<Vec<String>> = commands.into_iter().map(|c| vec![c]).collect();
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = snapshot(&format!("help_{}", path.join("_")), &lab, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        for sub in subcommands(&String::from_utf8_lossy(&out.stdout)) {
            let mut nested = path.clone();
            nested.push(sub);
            queue.push(nested);
        }
    }
    // -h is the short form: a summary without the long descriptions.
    snapshot("help_short_plan", &lab, &["plan", "-h"]);
}

/// Every input-validation error: exit code 2, nothing on stdout, every problem named with its field,
/// value, source and what is allowed; or clap's own message for a malformed command line.
#[test]
fn input_errors() {
    let lab = LabDir::new();
    let cases: &[(&str, &[&str])] = &[
        (
            "error_unknown_node_type",
            &["plan", "--node-type", "g9.huge"],
        ),
        ("error_too_many_gpus", &["plan", "--gpus", "4"]),
        (
            "error_desired_outside_min_max",
            &["plan", "--desired-nodes", "5"],
        ),
        ("error_unknown_region", &["plan", "--region", "us-west-9"]),
        ("error_empty_name", &["plan", "--name", ""]),
        ("error_bad_pod_name", &["plan", "--pod-name", "Bad_Name"]),
        ("error_empty_image", &["plan", "--image", ""]),
        ("error_small_disk", &["plan", "--disk", "1"]),
        ("error_time_slicing_zero", &["plan", "--time-slicing", "0"]),
        (
            "error_bad_quantities",
            &[
                "plan",
                "--cpu",
                "lots",
                "--memory",
                "12",
                "--volume-size",
                "big",
            ],
        ),
        // `up` refuses a bad autostop setting before any call, naming the flag.
        ("error_bad_autostop", &["up", "--autostop", "5m"]),
        ("error_bad_budget", &["plan", "--budget", "lots"]),
        (
            "error_load_balancer_without_cidr",
            &["plan", "--access", "load-balancer"],
        ),
        // `up` validates before it calls anything.
        (
            "error_up_unknown_node_type",
            &["up", "--node-type", "g9.huge"],
        ),
        // clap: values and flags it cannot parse.
        ("error_bad_flag_value", &["plan", "--min-nodes", "lots"]),
        ("error_bad_tag", &["plan", "--tag", "bad"]),
        ("error_bad_cidr", &["plan", "--allow-cidr", "nope"]),
        ("error_bad_output_format", &["plan", "-o", "xml"]),
        ("error_unknown_flag", &["plan", "--nodes", "2"]),
        ("error_unknown_subcommand", &["frobnicate"]),
        ("error_no_subcommand", &[]),
        ("error_unknown_shell", &["completions", "fish2"]),
        ("error_exec_without_command", &["exec"]),
        ("error_ssh_t_and_big_t", &["ssh", "-t", "-T"]),
        (
            "error_catalog_gpus_with_filter",
            &["catalog", "--gpus", "--gpu", "t4"],
        ),
        (
            "error_catalog_unknown_gpu",
            &["catalog", "--gpu", "rtx4090"],
        ),
        ("error_forward_bad_port", &["forward", "99999"]),
        // cp needs exactly one side in the workspace; checked before the lab is looked up.
        ("error_cp_two_local_paths", &["cp", "a.txt", "b.txt"]),
        ("error_cp_two_workspace_paths", &["cp", ":a.txt", ":b.txt"]),
        (
            "error_cp_mixed_sources",
            &["cp", "a.txt", ":b.txt", ":/workspace/"],
        ),
        ("error_cp_without_target", &["cp", "a.txt"]),
        (
            "error_cp_bad_via",
            &["cp", "--via", "scp", "a.txt", ":/workspace/"],
        ),
        // vllm, slurm, image: clap's checks of their values.
        ("error_vllm_no_subcommand", &["vllm"]),
        ("error_vllm_serve_without_model", &["vllm", "serve"]),
        (
            "error_vllm_bad_memory_fraction",
            &["vllm", "serve", "m", "--gpu-memory-utilization", "1.5"],
        ),
        (
            "error_vllm_memory_fraction_not_a_number",
            &["vllm", "serve", "m", "--gpu-memory-utilization", "most"],
        ),
        (
            "error_vllm_bad_dtype",
            &["vllm", "serve", "m", "--dtype", "fp8"],
        ),
        (
            "error_vllm_short_context",
            &["vllm", "serve", "m", "--max-model-len", "64"],
        ),
        (
            "error_vllm_bench_zero_requests",
            &["vllm", "bench", "--requests", "0"],
        ),
        ("error_vllm_logs_bad_lines", &["vllm", "logs", "-n", "all"]),
        ("error_slurm_no_subcommand", &["slurm"]),
        ("error_slurm_run_without_command", &["slurm", "run"]),
        (
            "error_slurm_run_zero_cpus",
            &["slurm", "run", "--cpus", "0", "--", "hostname"],
        ),
        ("error_image_no_subcommand", &["image"]),
        // image validates the lab's spec before it looks for docker or AWS.
        (
            "error_image_dockerfile_bad_spec",
            &["image", "dockerfile", "--node-type", "g9.huge"],
        ),
        (
            "error_image_build_bad_spec",
            &["image", "build", "--region", "us-west-9"],
        ),
        (
            "error_test_local_with_name",
            &["test", "--local", "--name", "dev"],
        ),
        (
            "error_test_python_not_on_path",
            &["test", "--local", "--python", "no-such-python-here"],
        ),
        (
            "error_test_python_not_python",
            &["test", "--local", "--python", "/bin/sh"],
        ),
    ];
    for (name, args) in cases {
        let out = snapshot(name, &lab, args);
        assert_eq!(out.status.code(), Some(2), "{name}: {args:?}");
        assert!(out.stdout.is_empty(), "{name}: stdout when refusing");
    }

    // Errors from the environment and from files.
    let env_cases = [
        ("error_cpu_only_node_type", "NODE_TYPE", "m5.large"),
        ("error_bad_name", "CLUSTER_NAME", "my cluster!"),
        (
            "error_unreadable_key",
            "SSH_KEY",
            "/nonexistent/id_ed25519.pub",
        ),
        ("error_env_not_a_number", "MAX_NODES", "two"),
    ];
    for (name, var, value) in env_cases {
        let out = snapshot(name, &LabDir::new().with_env(var, value), &["plan"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
    }
    let out = snapshot(
        "error_min_above_max",
        &LabDir::new()
            .with_env("MIN_NODES", "3")
            .with_env("MAX_NODES", "2"),
        &["plan"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = snapshot(
        "error_several_problems",
        &LabDir::new().with_env("MIN_NODES", "3"),
        &["plan", "--region", "nowhere", "--gpus", "2"],
    );
    assert_eq!(out.status.code(), Some(2));

    let malformed = LabDir::new();
    malformed.write_config("[nodes]\nmin = \"one\"\n");
    for (name, args) in [
        ("error_malformed_config", &["plan"][..]),
        ("error_malformed_config_show", &["config", "show"][..]),
        ("error_malformed_config_catalog", &["catalog"][..]),
    ] {
        let out = snapshot(name, &malformed, args);
        assert_eq!(out.status.code(), Some(2), "{name}");
    }
    // --python names a file that is not a program: refused before anything runs, naming the flag.
    let not_a_program = LabDir::new();
    std::fs::write(not_a_program.work().join("python"), "").unwrap();
    let out = snapshot(
        "error_test_python_not_executable",
        &not_a_program,
        &["test", "--local", "--python", "./python"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    let unknown_key = LabDir::new();
    unknown_key.write_config("[nodes]\ninstance = \"g5.xlarge\"\n");
    snapshot("error_unknown_config_key", &unknown_key, &["plan"]);
    let missing = LabDir::new();
    let path = missing.work().join("missing.toml");
    let out = snapshot(
        "error_missing_config_file",
        &missing,
        &["plan", "--config", &path.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `gpulab test --local` on this machine, which has no GPU: one line per check says what is missing,
/// and the exit code is that of a failed `gpulab test`. Snapshot only where the machine is bare (see
/// [`host_is_bare`]); elsewhere only the exit code is checked.
#[test]
fn test_local() {
    let lab = LabDir::new();
    let args = ["test", "--local", "--no-vllm"];
    if !host_is_bare() {
        let out = run(&lab, &args);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
        return;
    }
    let out = snapshot("test_local_no_gpu", &lab, &args);
    assert_eq!(out.status.code(), Some(1));
    let out = snapshot(
        "test_local_no_gpu_json",
        &lab,
        &["test", "--local", "--no-vllm", "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["instance"], serde_json::Value::Null);
    for check in report["checks"].as_array().expect("checks") {
        assert!(
            ["unavailable", "skipped"].contains(&check["status"].as_str().unwrap_or("")),
            "a check passed or failed without a GPU: {check}"
        );
    }
}

/// Whether this machine gives the emulated workspace exactly what the GPU-dependent snapshots expect:
/// no `nvidia-smi`, a `python3` without PyTorch and vLLM, no Slurm. The emulator runs the pod's commands
/// here, directly (nvidia-smi for `status`) and through `bash -lc` (the checks, Slurm's probes).
fn host_is_bare() -> bool {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("nvidia-smi").is_file())
    });
    let probe = "command -v python3 >/dev/null && ! command -v nvidia-smi >/dev/null \
        && ! command -v sinfo >/dev/null \
        && ! python3 -c 'import torch' 2>/dev/null && ! python3 -c 'import vllm' 2>/dev/null";
    !on_path
        && Command::new("bash")
            .args(["-lc", probe])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A lab on the Kubernetes emulator (one g4dn.xlarge-like GPU node), as an existing cluster, through
/// its whole life.
#[test]
fn lab_on_an_existing_cluster() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a runtime for the emulator");
    let emu = runtime
        .block_on(KubeEmulator::start())
        .expect("start the Kubernetes emulator");
    emu.add_node(NodeSpec::gpu("ip-192-168-10-10.us-west-2.compute.internal"));
    let user = LabDir::new().with_default_key();
    let kubeconfig = user.home().join("emulator.kubeconfig");
    emu.write_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    let pod_dir = emu.pod_dir("gpulab", "gpu-dev-pod-0");
    let lab_snapshot = |name: &str, args: &[&str]| -> Output {
        let out = run(&user, args);
        let text =
            transcript(&user, args, &out).replace(&pod_dir.display().to_string(), "[POD_DIR]");
        let mut settings = settings();
        // `ls`: the last column is the spend since `up`.
        settings.add_filter(r"(?m)^(  snap\s.*\s)\d+\.\d+$", "${1}[SPENT]");
        settings.bind(|| insta::assert_snapshot!(name, text));
        out
    };
    let bare_host = host_is_bare();
    if !bare_host {
        eprintln!(
            "this machine has nvidia-smi, PyTorch, vLLM or Slurm, or no python3: the emulated workspace \
             (which runs commands here) is not the bare one the status, test and slurm snapshots show; \
             they are skipped"
        );
    }

    let up = [
        "up",
        "--name",
        "snap",
        "--context",
        "gpulab-emulator",
        "--kubeconfig",
        &kubeconfig,
    ];
    let out = lab_snapshot("lab_up", &up);
    assert!(out.status.success());
    // Again: resumes, finds everything done.
    let out = lab_snapshot("lab_up_again_json", &[&up[..], &["-o", "json"]].concat());
    assert!(out.status.success());

    if bare_host {
        lab_snapshot("lab_status", &["status", "--name", "snap"]);
        lab_snapshot(
            "lab_status_json",
            &["status", "--name", "snap", "-o", "json"],
        );
    }
    lab_snapshot("lab_cost", &["cost", "--name", "snap"]);
    lab_snapshot("lab_cost_json", &["cost", "--name", "snap", "-o", "json"]);
    lab_snapshot("lab_ls", &["ls"]);
    lab_snapshot("lab_ls_json", &["ls", "-o", "json"]);

    let out = lab_snapshot(
        "lab_exec_echo",
        &["exec", "--name", "snap", "--", "echo", "hi"],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = lab_snapshot(
        "lab_exec_exit_3",
        &["exec", "--name", "snap", "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    let out = lab_snapshot(
        "lab_exec_stdout_stderr",
        &[
            "exec",
            "--name",
            "snap",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4));
    let out = lab_snapshot(
        "lab_exec_not_found",
        &["exec", "--name", "snap", "--", "no-such-command-here"],
    );
    assert_ne!(out.status.code(), Some(0));

    // cp both ways through the API server; a relative workspace path is relative to the pod's working
    // directory. The emulated workspace runs no sshd, so SSH fails and says what to do.
    std::fs::write(user.work().join("train.py"), "print('hi')\n").unwrap();
    let out = lab_snapshot(
        "lab_cp_upload_via_kube",
        &[
            "cp",
            "--name",
            "snap",
            "--via",
            "kube",
            "train.py",
            ":train.py",
        ],
    );
    assert!(out.status.success());
    let out = lab_snapshot(
        "lab_cp_download_via_kube",
        &[
            "cp",
            "--name",
            "snap",
            "--via",
            "kube",
            ":train.py",
            "back.py",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(user.work().join("back.py")).unwrap(),
        "print('hi')\n"
    );
    lab_snapshot(
        "lab_cp_missing_file_via_kube",
        &["cp", "--name", "snap", "--via", "kube", ":missing.txt", "."],
    );
    lab_snapshot(
        "lab_cp_local_file_missing",
        &[
            "cp",
            "--name",
            "snap",
            "--via",
            "kube",
            "missing.txt",
            ":x.txt",
        ],
    );
    lab_snapshot(
        "lab_cp_without_sshd",
        &[
            "cp",
            "--name",
            "snap",
            "--via",
            "ssh",
            "train.py",
            ":train.py",
        ],
    );

    lab_snapshot("lab_ssh_config", &["ssh-config", "--name", "snap"]);
    lab_snapshot("lab_stop", &["stop", "--name", "snap"]);
    lab_snapshot("lab_start", &["start", "--name", "snap"]);

    // No GPU here: every check is unavailable (or skipped), none passes, and the exit code says so.
    let test_json = ["test", "--name", "snap", "-o", "json"];
    if bare_host {
        let out = lab_snapshot("lab_test_json", &test_json);
        assert_eq!(out.status.code(), Some(1));
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("test -o json is JSON");
        for check in report["checks"].as_array().expect("checks") {
            assert!(
                ["unavailable", "skipped"].contains(&check["status"].as_str().unwrap_or("")),
                "a check passed or failed without a GPU: {check}"
            );
        }
        let out = lab_snapshot("lab_test_no_vllm", &["test", "--name", "snap", "--no-vllm"]);
        assert_eq!(out.status.code(), Some(1));
    } else {
        let out = run(&user, &test_json);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    }

    // `vllm logs` reads /workspace/.gpulab/vllm.log, here on this machine: only where there is none.
    // (`vllm stop` is left out: it would signal whatever process a pid file here names.)
    if !Path::new(gpulab_core::vllm::LOG_FILE).exists() {
        lab_snapshot("lab_vllm_logs", &["vllm", "logs", "--name", "snap"]);
    }
    if bare_host {
        let out = lab_snapshot(
            "lab_slurm_setup_no_install",
            &["slurm", "setup", "--name", "snap", "--no-install"],
        );
        assert_ne!(out.status.code(), Some(0));
    }

    let out = lab_snapshot("lab_down_without_yes", &["down", "--name", "snap"]);
    assert_eq!(out.status.code(), Some(2));
    let out = lab_snapshot("lab_down", &["down", "--name", "snap", "--yes"]);
    assert!(out.status.success());
    lab_snapshot("lab_ls_after_down", &["ls"]);
    lab_snapshot("lab_status_after_down", &["status", "--name", "snap"]);
    drop(emu);
}
