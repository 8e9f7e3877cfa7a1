//! Layering and validation: each source overrides the one before, and every bad value is reported with
//! its field, source and what is allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWxhYi10ZXN0LWtleS1ub3QtcmVhbC0xMjM0NTY3 test";

/// A fake machine: a temp dir with a home (and `~/.ssh`), a user config dir and a working dir.
struct Machine {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Machine {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home/.ssh", "config/gpulab", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Machine {
            dir,
            env: BTreeMap::new(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::write(&path, text).unwrap();
        path
    }
    fn env(mut self, var: &str, value: &str) -> Self {
        self.env.insert(var.into(), value.into());
        self
    }
    fn inputs(&self, overrides: SpecLayer) -> SpecInputs {
        SpecInputs {
            files: vec![
                self.path("config/gpulab/gpulab.toml"),
                self.path("work/gpulab.toml"),
            ],
            explicit_file: None,
            env: self.env.clone(),
            overrides,
            override_source: Some(|field| Source::Flag(format!("--{field}"))),
            home: Some(self.path("home")),
        }
    }
    fn resolve(&self, overrides: SpecLayer) -> Result<ResolvedSpec, SpecErrors> {
        self.inputs(overrides).resolve()
    }
    fn validate(&self, overrides: SpecLayer) -> Result<ValidSpec, SpecErrors> {
        self.resolve(overrides)?.validate()
    }
}

fn nodes(f: impl FnOnce(&mut NodesLayer)) -> SpecLayer {
    let mut layer = SpecLayer::default();
    f(&mut layer.nodes);
    layer
}

fn workspace(f: impl FnOnce(&mut WorkspaceLayer)) -> SpecLayer {
    let mut layer = SpecLayer::default();
    f(&mut layer.workspace);
    layer
}

/// The single error about `field`, checked to name its source and to say what is allowed.
fn only_error(errors: &SpecErrors, field: &str) -> FieldError {
    let found: Vec<_> = errors.for_field(field).cloned().collect();
    assert_eq!(
        found.len(),
        1,
        "expected one error for {field}, got {errors}"
    );
    let e = found.into_iter().next().unwrap();
    assert!(
        !e.allowed.is_empty(),
        "{field}: error says nothing of what is allowed: {e}"
    );
    e
}

#[test]
fn defaults_are_the_original_scripts() {
    let spec = Machine::new().validate(SpecLayer::default()).unwrap();
    assert_eq!(spec.name(), "gpu-learning-cluster");
    assert_eq!(spec.spec.region, "us-west-2");
    assert_eq!(spec.instance.name, "g4dn.xlarge");
    assert_eq!(
        (spec.nodes().min, spec.nodes().desired, spec.nodes().max),
        (1, 1, 2)
    );
    assert_eq!(spec.access().mode, AccessMode::PortForward);
    assert_eq!(
        spec.provenance.source("nodes.instance_type"),
        Source::Default
    );
    // "auto" sizes the pod to fit a g4dn.xlarge beside kubelet's reservations (3920m, 14481Mi
    // allocatable), the system pods (490m, 652Mi) and an image build (250m, 1536Mi): 3180m and 12293Mi
    // left, rounded down. The original 4 CPU and 16Gi would never schedule on it, nor would the
    // earlier 3500m.
    assert_eq!(spec.cpu.text, "3100m");
    assert_eq!(spec.memory.text, "12Gi");
}

#[test]
fn each_source_overrides_the_one_before() {
    let m = Machine::new();
    let user = m.write(
        "config/gpulab/gpulab.toml",
        "region = \"eu-west-1\"\n[nodes]\ninstance_type = \"g5.xlarge\"\nmin = 0\n",
    );
    let work = m.write(
        "work/gpulab.toml",
        "[nodes]\ninstance_type = \"g6.xlarge\"\nmax = 3\n[tags]\nteam = \"ml\"\n",
    );
    let m = m
        .env("NODE_TYPE", "g4dn.2xlarge")
        .env("MAX_NODES", "4")
        .env("CLUSTER_NAME", "env-lab");
    let resolved = m.resolve(nodes(|n| n.max = Some(5))).unwrap();
    let s = &resolved.spec;
    let p = &resolved.provenance;

    assert_eq!(
        (s.region.as_str(), p.source("region")),
        ("eu-west-1", Source::File(user.clone()))
    );
    assert_eq!(
        (s.nodes.min, p.source("nodes.min")),
        (0, Source::File(user))
    );
    assert_eq!(
        (
            s.nodes.instance_type.as_str(),
            p.source("nodes.instance_type")
        ),
        ("g4dn.2xlarge", Source::Env("NODE_TYPE".into()))
    );
    assert_eq!(
        (s.name.as_str(), p.source("name")),
        ("env-lab", Source::Env("CLUSTER_NAME".into()))
    );
    assert_eq!(
        (s.nodes.max, p.source("nodes.max")),
        (5, Source::Flag("--nodes.max".into()))
    );
    assert_eq!(
        (s.tags["team"].as_str(), p.source("tags")),
        ("ml", Source::File(work))
    );
    assert_eq!(p.source("nodes.desired"), Source::Default);
}

#[test]
fn aws_region_wins_over_the_older_variable() {
    let m = Machine::new()
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("AWS_REGION", "us-east-1");
    let resolved = m.resolve(SpecLayer::default()).unwrap();
    assert_eq!(resolved.spec.region, "us-east-1");
    assert_eq!(
        resolved.provenance.source("region"),
        Source::Env("AWS_REGION".into())
    );
    let m = Machine::new().env("AWS_DEFAULT_REGION", "eu-west-1");
    assert_eq!(
        m.resolve(SpecLayer::default())
            .unwrap()
            .provenance
            .source("region"),
        Source::Env("AWS_DEFAULT_REGION".into())
    );
}

#[test]
fn an_explicit_config_replaces_the_discovered_ones_and_must_exist() {
    let m = Machine::new();
    m.write("work/gpulab.toml", "region = \"eu-west-1\"\n");
    let other = m.write("other.toml", "region = \"us-east-1\"\n");
    let inputs = SpecInputs {
        explicit_file: Some(other),
        ..m.inputs(SpecLayer::default())
    };
    assert_eq!(inputs.resolve().unwrap().spec.region, "us-east-1");

    let missing = SpecInputs {
        explicit_file: Some(m.path("nope.toml")),
        ..m.inputs(SpecLayer::default())
    };
    let e = only_error(&missing.resolve().unwrap_err(), "file");
    assert!(e.problem.contains("cannot read"), "{e}");
}

#[test]
fn unparsable_environment_is_reported_with_its_variable() {
    let errors = Machine::new()
        .env("MIN_NODES", "two")
        .resolve(SpecLayer::default())
        .unwrap_err();
    let e = only_error(&errors, "nodes.min");
    assert_eq!(
        (e.value.as_str(), e.source),
        ("two", Source::Env("MIN_NODES".into()))
    );
}

#[test]
fn malformed_files_name_the_file_the_line_and_the_keys_allowed() {
    let m = Machine::new();
    let path = m.write(
        "work/gpulab.toml",
        "region = \"us-east-1\"\n[nodes]\nmin = \"two\"\n",
    );
    let e = only_error(&m.resolve(SpecLayer::default()).unwrap_err(), "file");
    assert_eq!(e.source, Source::File(path));
    assert!(e.problem.contains("line 3"), "{e}");

    m.write("work/gpulab.toml", "[nodes]\nnode_type = \"g5.xlarge\"\n");
    let e = only_error(&m.resolve(SpecLayer::default()).unwrap_err(), "file");
    assert!(
        e.problem.contains("node_type") && e.problem.contains("instance_type"),
        "{e}"
    );
    assert!(e.problem.contains("line 2"), "the unknown key's line: {e}");

    m.write("work/gpulab.toml", "this is not toml");
    only_error(&m.resolve(SpecLayer::default()).unwrap_err(), "file");
}

#[test]
fn unknown_and_cpu_only_node_types_are_refused() {
    let m = Machine::new();
    let e = only_error(
        &m.validate(nodes(|n| n.instance_type = Some("g9.huge".into())))
            .unwrap_err(),
        "nodes.instance_type",
    );
    assert!(
        e.problem.contains("not in gpulab's GPU catalog") && e.allowed.contains("g4dn"),
        "{e}"
    );
    assert_eq!(e.source, Source::Flag("--nodes.instance_type".into()));

    let m = Machine::new().env("NODE_TYPE", "m5.large");
    let e = only_error(
        &m.validate(SpecLayer::default()).unwrap_err(),
        "nodes.instance_type",
    );
    assert!(e.problem.contains("no GPU"), "{e}");
    assert_eq!(e.source, Source::Env("NODE_TYPE".into()));
}

#[test]
fn node_counts_must_be_ordered() {
    let m = Machine::new().env("MIN_NODES", "3").env("MAX_NODES", "2");
    let e = only_error(&m.validate(SpecLayer::default()).unwrap_err(), "nodes.min");
    assert!(e.problem.contains("greater than nodes.max"), "{e}");

    let e = only_error(
        &Machine::new()
            .validate(nodes(|n| n.desired = Some(5)))
            .unwrap_err(),
        "nodes.desired",
    );
    assert_eq!(e.allowed, "1 to 2");
    only_error(
        &Machine::new()
            .validate(nodes(|n| n.max = Some(0)))
            .unwrap_err(),
        "nodes.max",
    );
    // 0 desired is a stopped lab, which is allowed.
    Machine::new()
        .validate(nodes(|n| (n.min, n.desired) = (Some(0), Some(0))))
        .unwrap();
}

#[test]
fn a_workspace_cannot_ask_for_more_gpus_than_a_node_has() {
    let e = only_error(
        &Machine::new()
            .validate(workspace(|w| w.gpus = Some(4)))
            .unwrap_err(),
        "workspace.gpus",
    );
    assert!(e.problem.contains("g4dn.xlarge has 1 GPU"), "{e}");
    assert_eq!(
        e.allowed,
        "1, or a node type with more GPUs (`gpulab catalog`)"
    );

    // On a 4-GPU node, 2 GPUs get half of the node.
    let spec = Machine::new()
        .validate(SpecLayer {
            workspace: WorkspaceLayer {
                gpus: Some(2),
                ..Default::default()
            },
            ..nodes(|n| n.instance_type = Some("g4dn.12xlarge".into()))
        })
        .unwrap();
    assert_eq!(
        (spec.cpu.text.as_str(), spec.memory.text.as_str()),
        ("23500m", "86Gi")
    );
}

#[test]
fn pod_sizes_must_fit_the_node() {
    let m = Machine::new();
    let errors = m
        .validate(workspace(|w| {
            (w.cpu, w.memory) = (Some("4".into()), Some("16Gi".into()))
        }))
        .unwrap_err();
    assert!(
        only_error(&errors, "workspace.cpu")
            .problem
            .contains("4 vCPUs")
    );
    assert!(
        only_error(&errors, "workspace.memory")
            .allowed
            .contains("up to 13829Mi")
    );
    let errors = m
        .validate(workspace(|w| {
            (w.cpu, w.volume_size) = (Some("two".into()), Some("50GB".into()))
        }))
        .unwrap_err();
    only_error(&errors, "workspace.cpu");
    only_error(&errors, "workspace.volume_size");
    let ok = m
        .validate(workspace(|w| {
            (w.cpu, w.memory) = (Some("2".into()), Some("8Gi".into()))
        }))
        .unwrap();
    assert_eq!(
        (ok.cpu.text.as_str(), ok.memory.text.as_str()),
        ("2", "8Gi")
    );
}

#[test]
fn names_follow_eks_and_kubernetes_rules() {
    for bad in [
        "",
        "-lab",
        "lab-",
        "my lab",
        "lab!",
        "a-name-that-is-far-too-long-for-gpulab-to-use",
    ] {
        let errors = Machine::new()
            .validate(SpecLayer {
                name: Some(bad.into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            only_error(&errors, "name").allowed.contains("1 to 40"),
            "{bad:?}"
        );
    }
    for good in ["lab", "My_Lab-2", "gpu-learning-cluster"] {
        Machine::new()
            .validate(SpecLayer {
                name: Some(good.into()),
                ..Default::default()
            })
            .unwrap();
    }
    let errors = Machine::new()
        .validate(workspace(|w| {
            (w.pod_name, w.namespace) = (Some("1pod".into()), Some("Lab".into()))
        }))
        .unwrap_err();
    only_error(&errors, "workspace.pod_name");
    only_error(&errors, "workspace.namespace");
    // `down` deletes the lab's namespace, so the cluster's own are refused.
    for system in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let errors = Machine::new()
            .validate(workspace(|w| w.namespace = Some(system.into())))
            .unwrap_err();
        let e = only_error(&errors, "workspace.namespace");
        assert!(e.problem.contains("down"), "{e}");
    }
}

#[test]
fn unknown_regions_are_refused_with_the_known_ones() {
    let errors = Machine::new()
        .env("AWS_REGION", "us-west-9")
        .validate(SpecLayer::default())
        .unwrap_err();
    let e = only_error(&errors, "region");
    assert_eq!(e.source, Source::Env("AWS_REGION".into()));
    assert!(e.allowed.contains("us-west-2") && e.allowed.contains("eu-west-1"));
}

#[test]
fn kubernetes_versions_are_minor_versions() {
    let with = |v: &str| {
        Machine::new().validate(SpecLayer {
            kubernetes_version: Some(v.into()),
            ..Default::default()
        })
    };
    with("1.33").unwrap();
    for bad in ["1.33.1", "v1.33", "2.0", "latest"] {
        only_error(&with(bad).unwrap_err(), "kubernetes_version");
    }
}

#[test]
fn ssh_keys_are_found_read_and_checked() {
    // Nothing named, nothing there: up will generate one.
    let m = Machine::new();
    let spec = m.validate(SpecLayer::default()).unwrap();
    assert_eq!(
        spec.ssh_key,
        SshKey::Generate {
            path: m.path("home/.ssh/gpulab_ed25519")
        }
    );

    // A default key is found.
    m.write(
        "home/.ssh/id_rsa.pub",
        &format!("{}\n", KEY.replace("ssh-ed25519", "ssh-rsa")),
    );
    assert!(
        matches!(m.validate(SpecLayer::default()).unwrap().ssh_key, SshKey::Existing { path, .. } if path.ends_with("id_rsa.pub"))
    );

    // A private key's path finds its .pub twin; `~` expands.
    m.write("home/.ssh/lab", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    m.write("home/.ssh/lab.pub", KEY);
    let spec = m
        .validate(workspace(|w| w.ssh_public_key = Some("~/.ssh/lab".into())))
        .unwrap();
    assert_eq!(
        spec.ssh_key,
        SshKey::Existing {
            path: m.path("home/.ssh/lab.pub"),
            public_key: KEY.into()
        }
    );

    // Unreadable, not a key, a private key without its twin.
    let e = |path: &Path| {
        only_error(
            &m.validate(workspace(|w| w.ssh_public_key = Some(path.into())))
                .unwrap_err(),
            "workspace.ssh_public_key",
        )
    };
    assert!(
        e(&m.path("home/.ssh/missing.pub"))
            .problem
            .contains("cannot read")
    );
    assert!(
        e(&m.write("junk.pub", "hello"))
            .problem
            .contains("not an OpenSSH public key")
    );
    assert!(
        e(&m.write("orphan", "-----BEGIN OPENSSH PRIVATE KEY-----\n"))
            .problem
            .contains("ssh-keygen -y")
    );
}

#[test]
fn load_balancers_need_narrow_address_ranges() {
    let access = |mode, cidrs: &[&str]| SpecLayer {
        access: AccessLayer {
            mode: Some(mode),
            allowed_cidrs: Some(cidrs.iter().map(|c| c.parse().unwrap()).collect()),
            api_cidrs: None,
        },
        ..Default::default()
    };
    let m = Machine::new();
    only_error(
        &m.validate(access(AccessMode::LoadBalancer, &[]))
            .unwrap_err(),
        "access.allowed_cidrs",
    );
    let e = only_error(
        &m.validate(access(AccessMode::LoadBalancer, &["0.0.0.0/0"]))
            .unwrap_err(),
        "access.allowed_cidrs",
    );
    assert!(e.problem.contains("whole internet"));
    m.validate(access(
        AccessMode::LoadBalancer,
        &["203.0.113.7/32", "2001:db8::/48"],
    ))
    .unwrap();
}

#[test]
fn all_problems_are_reported_together() {
    let m = Machine::new()
        .env("AWS_REGION", "nowhere-1")
        .env("MIN_NODES", "5");
    let errors = m
        .validate(SpecLayer {
            name: Some("bad name".into()),
            workspace: WorkspaceLayer {
                gpus: Some(8),
                ..Default::default()
            },
            tags: BTreeMap::from([("aws:reserved".into(), "x".into())]),
            ..Default::default()
        })
        .unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["name", "region", "nodes.min", "workspace.gpus", "tags"]
    );
    let text = errors.to_string();
    assert!(text.starts_with("invalid lab spec (5 problems):"), "{text}");
    assert!(
        text.contains("region = \"nowhere-1\" (from env AWS_REGION)"),
        "{text}"
    );
}

#[test]
fn explain_lists_every_field_of_the_spec() {
    fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) if prefix != "tags" => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let resolved = Machine::new().resolve(SpecLayer::default()).unwrap();
    let mut expected = Vec::new();
    leaves(
        "",
        &serde_json::to_value(&resolved.spec).unwrap(),
        &mut expected,
    );
    let mut explained: Vec<String> = resolved
        .explain()
        .iter()
        .map(|f| f.field.to_string())
        .collect();
    expected.sort();
    explained.sort();
    assert_eq!(explained, expected);
}

#[test]
fn the_effective_spec_round_trips_through_gpulab_toml() {
    let m = Machine::new().env("NODE_TYPE", "g5.2xlarge");
    let mut layer = workspace(|w| w.ssh_public_key = Some("/keys/id.pub".into()));
    layer.access = AccessLayer {
        mode: Some(AccessMode::LoadBalancer),
        allowed_cidrs: Some(vec!["203.0.113.0/24".parse().unwrap()]),
        api_cidrs: None,
    };
    layer.tags.insert("team".into(), "ml".into());
    let first = m.resolve(layer).unwrap().spec;

    let m2 = Machine::new();
    m2.write("work/gpulab.toml", &toml::to_string(&first).unwrap());
    assert_eq!(m2.resolve(SpecLayer::default()).unwrap().spec, first);
}
