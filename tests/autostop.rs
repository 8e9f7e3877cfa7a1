//! Idle autostop and the budget, end to end with time under the test's control: `up --autostop` puts the
//! agent, its least-privilege Role and (on AWS) its Pod Identity role in the emulated clouds; then the
//! very programs gpulab ships (the agent and the activity reporter, run here with `python3`) see an
//! idle lab, warn it, and stop it through the same APIs they use in a cluster: the `scale` subresource
//! of the workspace on an existing cluster, UpdateNodegroupConfig on AWS (which the emulated EKS turns
//! into the nodes going away). `status` then says so, the bill stops counting node-hours, and `start`
//! brings the lab back.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use gpulab_core::autostop::{ACTIVITY_SCRIPT, AGENT_SCRIPT, Settings};
use gpulab_core::events::Silent;
use gpulab_core::naming::{AwsNames, KubeNames};
use gpulab_core::spec::SpecLayer;
use gpulab_core::{Error, Lab, LabOptions, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::moto::percent_decode;
use serde_json::Value;

/// The activity reporter, run on this machine as the workspace runs it, seeing no SSH session, no
/// kernel, no job and an idle GPU (a stand-in `nvidia-smi`), so the lab is idle.
struct Reporter {
    child: Child,
    port: u16,
    notice: PathBuf,
}

impl Reporter {
    fn start(dir: &Path, token: &str) -> Reporter {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let smi = bin.join("nvidia-smi");
        // Utilisation 0 %, no compute process: what an idle T4 answers.
        std::fs::write(
            &smi,
            "#!/bin/sh\ncase \"$*\" in *utilization*) echo 0 ;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let script = dir.join("activity.py");
        std::fs::write(&script, ACTIVITY_SCRIPT).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let notice = dir.join("notice");
        let mut child = Command::new(python())
            .arg(&script)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("PATH", &bin)
            .env("GPULAB_ACTIVITY_TOKEN_FILE", &token_file)
            .env("GPULAB_PROC_ROOT", dir.join("proc"))
            .env("GPULAB_NOTICE_FILE", &notice)
            .env("GPULAB_SHUTDOWN_FILE", dir.join("shutdown.json"))
            .env("GPULAB_JUPYTER_URL", "http://127.0.0.1:9")
            .env("GPULAB_VLLM_URL", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .spawn()
            .expect("start activity.py");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Reporter {
                    child,
                    port,
                    notice,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("activity.py did not listen on {port}");
    }

    /// The notice the workspace's users see, if any.
    fn notice(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.notice).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The interpreter `python3` runs, by its path: the reporter runs with a PATH of stand-ins only, and
/// `python3` may be a shim (pyenv) that needs the real PATH.
fn python() -> PathBuf {
    if let Ok(explicit) = std::env::var("GPULAB_AUTOSTOP_PYTHON") {
        return explicit.into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The agent as the cluster runs it: the settings `up` put in its ConfigMap (the reporter's URL
/// pointed at the one on this machine), one tick at `now`.
struct Agent {
    dir: PathBuf,
    settings: Settings,
    env: Vec<(String, String)>,
}

impl Agent {
    fn new(dir: &Path, emu: &KubeEmulator, spec_names: &KubeNames, reporter: &Reporter) -> Agent {
        let config = emu
            .object(
                "configmaps",
                &spec_names.namespace,
                &spec_names.autostop_settings,
            )
            .expect("up made the agent's ConfigMap");
        assert_eq!(
            config["data"]["agent.py"].as_str(),
            Some(AGENT_SCRIPT),
            "the agent runs gpulab's own program"
        );
        let mut settings: Settings =
            serde_json::from_str(config["data"]["settings.json"].as_str().unwrap()).unwrap();
        assert_eq!(
            settings.activity_url,
            format!(
                "http://{}.{}.svc:9102",
                spec_names.activity_service, spec_names.namespace
            )
        );
        settings.activity_url = format!("http://127.0.0.1:{}", reporter.port);
        std::fs::write(dir.join("agent.py"), AGENT_SCRIPT).unwrap();
        std::fs::write(dir.join("token"), activity_token(emu, spec_names)).unwrap();
        Agent {
            dir: dir.to_path_buf(),
            settings,
            env: vec![("GPULAB_KUBE_URL".into(), emu.url())],
        }
    }

    fn tick(&self, now: u64) -> Value {
        std::fs::write(
            self.dir.join("settings.json"),
            serde_json::to_string(&self.settings).unwrap(),
        )
        .unwrap();
        let out = Command::new(python())
            .arg(self.dir.join("agent.py"))
            .args(["tick", "--now", &now.to_string()])
            .env("GPULAB_AUTOSTOP_SETTINGS", self.dir.join("settings.json"))
            .env("GPULAB_ACTIVITY_TOKEN_FILE", self.dir.join("token"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run agent.py");
        assert!(
            out.status.success(),
            "agent.py tick failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the agent prints its state")
    }
}

fn activity_token(emu: &KubeEmulator, names: &KubeNames) -> String {
    let secret = emu
        .object("secrets", &names.namespace, &names.activity_token)
        .expect("the workspace's activity token");
    let encoded = secret["data"]["token"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn replicas(emu: &KubeEmulator, names: &KubeNames) -> u64 {
    emu.object("statefulsets", &names.namespace, &names.workload)
        .unwrap()["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_existing_cluster_an_idle_workspace_is_scaled_to_zero_and_start_brings_it_back() {
    let user = LabDir::new().with_default_key();
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let kubeconfig = user.home().join("guest.kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let spec = user
        .inputs(SpecLayer {
            autostop: gpulab_core::spec::AutostopLayer {
                idle: Some("10m".into()),
                budget: None,
            },
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
    let provider = Provider::Existing {
        kubeconfig: Some(kubeconfig),
        context: Some("gpulab-emulator".into()),
    };
    let options = LabOptions {
        home: Some(user.gpulab_home()),
        ready_timeout: Some(Duration::from_secs(15)),
        ..Default::default()
    };
    let lab = Lab::new(spec, provider, options.clone()).await.unwrap();
    lab.up(&Silent).await.expect("up");
    let names = KubeNames::new(&lab.spec().spec);

    // The agent may read and write its state and scale the workspace, and nothing else.
    let role = emu
        .object("roles", &names.namespace, &names.autostop_agent)
        .expect("the agent's Role");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [names.autostop_state], "verbs": ["get", "patch"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "resourceNames": [names.workload], "verbs": ["get", "patch"]},
        ])
    );
    let binding = emu
        .object("rolebindings", &names.namespace, &names.autostop_agent)
        .unwrap();
    assert_eq!(
        binding["subjects"][0]["name"],
        names.autostop_agent.as_str()
    );
    let deployment = emu
        .object("deployments", &names.namespace, &names.autostop_agent)
        .expect("the agent's Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], names.autostop_agent.as_str());
    assert_eq!(
        pod["containers"][0]["image"],
        gpulab_core::autostop::AGENT_IMAGE
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // A budget needs prices, which someone else's cluster does not have: refused, nothing changes.
    let err = lab.set_autostop(None, Some("25")).await.unwrap_err();
    match &err {
        Error::Spec(errors) => assert_eq!(errors.0[0].field, "autostop.budget", "{err}"),
        other => panic!("not a spec error: {other}"),
    }
    assert!(err.is_usage(), "a bad setting exits 2");

    // The agent, ticking with the clock in the test's hands.
    let work = tempfile::tempdir().unwrap();
    let reporter = Reporter::start(
        &work.path().join("workspace"),
        &activity_token(&emu, &names),
    );
    std::fs::create_dir_all(work.path().join("agent")).unwrap();
    let agent = Agent::new(&work.path().join("agent"), &emu, &names, &reporter);
    assert!(matches!(
        agent.settings.target,
        gpulab_core::autostop::Target::Statefulset { .. }
    ));
    let t0 = now();
    let state = agent.tick(t0);
    assert_eq!(state["stopped"], Value::Null, "{state}");
    assert_eq!(state["active"], serde_json::json!([]), "{state}");
    assert!(reporter.notice().is_none());
    // Five minutes before the stop, every terminal and the notice file hear of it.
    let state = agent.tick(t0 + 6 * 60);
    assert_eq!(state["stopped"], Value::Null, "{state}");
    let notice = reporter.notice().expect("a warning before the stop");
    assert_eq!(notice["kind"], "autostop", "{notice}");
    assert_eq!(replicas(&emu, &names), 1);
    // Ten minutes idle: the workspace goes to zero replicas; /workspace's claim stays.
    let state = agent.tick(t0 + 10 * 60 + 1);
    assert_eq!(state["stopped"]["reason"], "idle", "{state}");
    assert_eq!(replicas(&emu, &names), 0);
    assert!(
        emu.object("persistentvolumeclaims", &names.namespace, &names.volume)
            .is_some()
    );

    let status = lab.status().await.unwrap();
    let autostop = status.autostop.expect("status reads the agent");
    assert!(
        autostop.next.starts_with("stopped the GPU nodes at"),
        "{}",
        autostop.next
    );
    assert_eq!(autostop.settings.idle, Some(Duration::from_secs(600)));

    // `start` brings the workspace back, ready; the agent sees it and starts counting again.
    lab.scale(1, &Silent).await.expect("start");
    assert_eq!(replicas(&emu, &names), 1);
    let state = agent.tick(t0 + 11 * 60);
    assert_eq!(state["stopped"], Value::Null, "{state}");
    assert_eq!(state["nodes"], 1, "{state}");

    // Off: the agent goes; what it counted stays.
    let off = lab.set_autostop(Some("off"), None).await.unwrap();
    assert_eq!(off.next, "off");
    assert!(
        emu.object("deployments", &names.namespace, &names.autostop_agent)
            .is_none()
    );
    assert!(
        emu.object("roles", &names.namespace, &names.autostop_agent)
            .is_none()
    );
    assert!(
        emu.object("configmaps", &names.namespace, &names.autostop_state)
            .is_some()
    );
    // And a later `up` that does not mention autostop (as `gpulab up` without --autostop) keeps it off.
    let again = Lab::new(
        user.inputs(SpecLayer::default())
            .resolve()
            .unwrap()
            .validate()
            .unwrap(),
        lab.provider().clone(),
        options,
    )
    .await
    .unwrap();
    again.up(&Silent).await.expect("up again");
    assert!(
        emu.object("deployments", &names.namespace, &names.autostop_agent)
            .is_none()
    );

    // A workspace of the lab's name without the lab's ID is never scaled.
    let sets: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> =
        kube::Api::namespaced(emu.client(), &names.namespace);
    sets.patch(
        &names.workload,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"metadata": {"labels": {"gpulab.io/lab-id": null}}}),
        ),
    )
    .await
    .unwrap();
    let err = lab.scale(0, &Silent).await.unwrap_err();
    assert!(matches!(err, Error::Ownership { .. }), "{err}");
    assert_eq!(replicas(&emu, &names), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_the_budget_stops_the_node_group_with_a_role_that_can_do_nothing_else() {
    let user = LabDir::new().with_default_key();
    let clouds = EmulatedClouds::start(&user.home())
        .await
        .expect("start moto and the Kubernetes emulator");
    let emu = &clouds.kube;
    let spec = user
        .inputs(SpecLayer {
            name: Some("budget".into()),
            autostop: gpulab_core::spec::AutostopLayer {
                idle: None,
                budget: Some(1.0),
            },
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
    let lab = Lab::new(spec, Provider::Aws, clouds.lab_options(user.gpulab_home()))
        .await
        .unwrap();
    lab.up(&Silent).await.expect("up");
    let names = KubeNames::new(&lab.spec().spec);
    let aws = AwsNames::new(&lab.spec().spec);

    // The agent's role: trusted by EKS Pod Identity, one inline policy with the two node-group
    // actions on this lab's node group, bound to the agent's service account.
    let clients = gpulab_core::provision::aws::AwsClients::new(
        &gpulab_core::provision::aws::load_sdk_config(
            "us-west-2",
            &clouds.lab_options(user.gpulab_home()).aws.sdk,
        )
        .await,
        None,
    );
    let role = clients
        .iam
        .get_role()
        .role_name(&aws.autostop_role)
        .send()
        .await
        .expect("the agent's role");
    let trust = percent_decode(role.role().unwrap().assume_role_policy_document().unwrap());
    assert!(trust.contains("pods.eks.amazonaws.com"), "{trust}");
    let policies = clients
        .iam
        .list_role_policies()
        .role_name(&aws.autostop_role)
        .send()
        .await
        .unwrap();
    assert_eq!(policies.policy_names(), ["gpulab-autostop"]);
    let attached = clients
        .iam
        .list_attached_role_policies()
        .role_name(&aws.autostop_role)
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty());
    let document = clients
        .iam
        .get_role_policy()
        .role_name(&aws.autostop_role)
        .policy_name("gpulab-autostop")
        .send()
        .await
        .unwrap();
    let document: Value =
        serde_json::from_str(&percent_decode(document.policy_document())).unwrap();
    assert_eq!(
        document,
        serde_json::from_str::<Value>(&gpulab_core::autostop::agent_policy(lab.spec())).unwrap()
    );
    let associations = clients
        .eks
        .list_pod_identity_associations()
        .cluster_name(&aws.cluster)
        .service_account(&names.autostop_agent)
        .send()
        .await
        .unwrap();
    assert_eq!(associations.associations().len(), 1);

    // The agent's ledger starts from what `cost` says and counts the node's price by the hour.
    let work = tempfile::tempdir().unwrap();
    let reporter = Reporter::start(&work.path().join("workspace"), &activity_token(emu, &names));
    std::fs::create_dir_all(work.path().join("agent")).unwrap();
    let mut agent = Agent::new(&work.path().join("agent"), emu, &names, &reporter);
    assert!(agent.settings.node_per_hour > 0.5, "{:?}", agent.settings);
    agent.env.extend([
        ("AWS_ENDPOINT_URL_EKS".to_string(), clouds.proxy.url()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ]);
    let t0 = agent.settings.spent_at;
    let per_hour = agent.settings.idle_per_hour + agent.settings.node_per_hour;
    let state = agent.tick(t0 + 60);
    assert_eq!(state["nodes"], 1, "{state}");
    // At 80 % of the budget: a warning in the workspace and in status.
    let at_80 = t0 + (0.85 / per_hour * 3600.0) as u64;
    let state = agent.tick(at_80);
    assert_eq!(state["budget_warned"], true, "{state}");
    assert_eq!(reporter.notice().unwrap()["kind"], "budget");
    let status = lab.status().await.unwrap().autostop.unwrap();
    assert!(
        status.warnings.iter().any(|w| w.contains("budget")),
        "{status:?}"
    );
    // At 100 %: the node group goes to zero, in EKS and so in the cluster.
    let at_100 = t0 + (1.05 / per_hour * 3600.0) as u64;
    let state = agent.tick(at_100);
    assert_eq!(state["stopped"]["reason"], "budget", "{state}");
    let group = clients
        .eks
        .describe_nodegroup()
        .cluster_name(&aws.cluster)
        .nodegroup_name(&aws.node_group)
        .send()
        .await
        .unwrap();
    let scaling = group.nodegroup().unwrap().scaling_config().unwrap();
    assert_eq!(
        (scaling.min_size(), scaling.desired_size()),
        (Some(0), Some(0))
    );
    // From then on only the idle price accrues.
    let later = agent.tick(at_100 + 3600);
    let grew = later["spent_usd"].as_f64().unwrap() - state["spent_usd"].as_f64().unwrap();
    assert!(
        (grew - agent.settings.idle_per_hour).abs() < 1e-6,
        "grew {grew}, idle price {}",
        agent.settings.idle_per_hour
    );
    // Status brings the lab's record in line: no node-hours after the stop.
    let status = lab.status().await.unwrap();
    assert!(
        status
            .autostop
            .unwrap()
            .next
            .starts_with("stopped the GPU nodes at")
    );
    assert_eq!(status.cost.nodes, 0);

    // down removes the agent's role with the rest.
    lab.down(&Silent).await.expect("down");
    let gone = clients
        .iam
        .get_role()
        .role_name(&aws.autostop_role)
        .send()
        .await;
    assert!(gone.is_err(), "the agent's role outlived down");
}
