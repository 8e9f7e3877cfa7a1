//! The kubelet's real mode: pods whose image the test chose run their container for real, in a
//! [`Container`](crate::rootfs::Container) made from a cached root filesystem. The simulated kubelet
//! (`sim::kubelet`) marks such a pod Running but not ready and queues it; the runtime loop here starts
//! the container with the pod's command, args, env, working directory and volumes, runs its TCP
//! readiness probe against the container's own loopback, restarts the container when it exits (the
//! pod's `restartPolicy: Always`, with a fresh root: what was not on a volume is gone), copies its output
//! to `pods/log`, and stops it when the pod is deleted: gracefully (preStop hook, SIGTERM, SIGKILL at
//! the grace period's end, then the pod object goes), or at once when the pod was removed outright.
//!
//! Volumes: a `persistentVolumeClaim` is a host folder named after the bound PersistentVolume, kept
//! for as long as the emulator runs, so it outlives the pod like an EBS volume; a `secret` or
//! `configMap` is projected as files with their `defaultMode`; an `emptyDir` is a folder of the
//! container (a tmpfs for `medium: Memory`). A pod that requests `nvidia.com/gpu` gets no GPU (there is
//! none): what the NVIDIA container toolkit would inject is not emulated.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::resources::{CONFIG_MAP, POD, PVC, SECRET};
use super::shared::Inner;
use super::sim::{self, record_event};
use super::store::{Sandbox, State, now};
use crate::rootfs::{Bind, Container, ContainerSpec, RootFs, project_files};

/// The environment every container of the root filesystem's "image" has before the pod's own.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Running {
    ns: String,
    name: String,
    container: Option<Container>,
    restarts: u32,
    ready: bool,
    probe_port: Option<u16>,
    serial: u32,
}

/// Start the runtime loop (once per emulator): it runs until the emulator's state is dropped.
pub(crate) fn spawn_runtime(inner: Arc<Inner>, rootfs: RootFs) {
    let weak = Arc::downgrade(&inner);
    drop(inner);
    tokio::spawn(async move {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut terminating: HashSet<String> = HashSet::new();
        loop {
            let Some(inner) = weak.upgrade() else {
                break;
            };
            tick(&inner, &rootfs, &mut running, &mut terminating).await;
            drop(inner);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (_, r) in running.drain() {
            if let Some(c) = r.container {
                c.remove().await;
            }
        }
    });
}

async fn tick(
    inner: &Arc<Inner>,
    rootfs: &RootFs,
    running: &mut HashMap<String, Running>,
    terminating: &mut HashSet<String>,
) {
    // The pods in the store, by uid: namespace, name, and the pod itself when it is being deleted.
    let pods: HashMap<String, (String, String, Option<Value>)> = {
        let st = inner.lock();
        st.list(POD, None)
            .into_iter()
            .filter_map(|p| {
                let key = |f: &str| p["metadata"][f].as_str().map(str::to_string);
                let marked = p["metadata"].get("deletionTimestamp").is_some();
                Some((
                    key("uid")?,
                    (key("namespace")?, key("name")?, marked.then(|| p.clone())),
                ))
            })
            .collect()
    };
    terminating.retain(|uid| pods.contains_key(uid));

    // Pods removed outright (their node went, or a grace period of 0): their containers die at once.
    let gone: Vec<String> = running
        .keys()
        .filter(|uid| !pods.contains_key(*uid))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(r) = running.remove(&uid) {
            forget_sandbox(inner, &r.ns, &r.name, &uid);
            // Its root's copy is removed in the background: the replacement pod (a StatefulSet's, under
            // the same name) starts without waiting for it, as a kubelet's does.
            if let Some(c) = r.container {
                tokio::spawn(c.remove());
            }
        }
    }

    // Pods deleted gracefully: the kubelet's termination, in the background.
    for (uid, (ns, name, marked)) in &pods {
        let Some(pod) = marked else {
            continue;
        };
        if terminating.contains(uid) || !inner.lock().real.as_ref().is_some_and(|r| r.wants(pod)) {
            continue;
        }
        terminating.insert(uid.clone());
        let container = running.remove(uid).and_then(|r| r.container);
        tokio::spawn(terminate(
            Arc::downgrade(inner),
            (ns.clone(), name.clone(), uid.clone()),
            pod.clone(),
            container,
        ));
    }
    let live: HashSet<&String> = pods
        .iter()
        .filter(|(_, (_, _, marked))| marked.is_none())
        .map(|(uid, _)| uid)
        .collect();

    // Pods the simulated kubelet queued.
    let queued: Vec<(String, String, String)> = std::mem::take(&mut inner.lock().to_start);
    for (ns, name, uid) in queued {
        if running.contains_key(&uid) || !live.contains(&uid) {
            continue;
        }
        running.insert(
            uid.clone(),
            Running {
                ns,
                name,
                container: None,
                restarts: 0,
                ready: false,
                probe_port: None,
                serial: 0,
            },
        );
    }

    for (uid, r) in running.iter_mut() {
        // (Re)start a container that is not running.
        let exited = match r.container.as_mut() {
            Some(c) => c.exited(),
            None => Some(-1),
        };
        if let Some(code) = exited {
            if let Some(c) = r.container.take() {
                r.restarts += 1;
                let log = std::fs::read_to_string(&c.log).unwrap_or_default();
                c.remove().await;
                container_exited(inner, &r.ns, &r.name, uid, code, r.restarts, &log);
                r.ready = false;
            }
            match start(inner, rootfs, &r.ns, &r.name, uid, r.serial).await {
                Ok(Some((container, probe))) => {
                    r.serial += 1;
                    r.probe_port = probe;
                    let mut st = inner.lock();
                    st.sandboxes.insert(
                        (r.ns.clone(), r.name.clone()),
                        Sandbox {
                            uid: uid.clone(),
                            pid: container.pid(),
                            env: container.exec_env().0.to_vec(),
                            working_dir: container.exec_env().1.to_string(),
                        },
                    );
                    r.container = Some(container);
                }
                Ok(None) => continue,
                Err(e) => {
                    let mut st = inner.lock();
                    if let Some(pod) = st.get(POD, &r.ns, &r.name).cloned() {
                        let msg = format!("Error: failed to start the container: {e}");
                        record_event(&mut st, &pod, "Warning", "Failed", &msg, "kubelet");
                    }
                    continue;
                }
            }
        }
        let Some(c) = r.container.as_ref() else {
            continue;
        };
        // Output for pods/log.
        if let Ok(text) = std::fs::read(&c.log) {
            let keep = &text[text.len().saturating_sub(1 << 20)..];
            inner.lock().logs.insert(
                (r.ns.clone(), r.name.clone()),
                String::from_utf8_lossy(keep).into_owned(),
            );
        }
        // The readiness probe: a TCP connection to the container's own loopback.
        let ready = match r.probe_port {
            Some(port) => tokio::time::timeout(Duration::from_secs(2), c.connect(port))
                .await
                .is_ok_and(|r| r.is_ok()),
            None => true,
        };
        if ready != r.ready {
            r.ready = ready;
            set_ready(inner, &r.ns, &r.name, uid, ready, r.restarts);
        }
    }
}

/// Drop the exec entry of pod `ns/name` if it is still the one of `uid`.
fn forget_sandbox(inner: &Inner, ns: &str, name: &str, uid: &str) {
    let mut st = inner.lock();
    let key = (ns.to_string(), name.to_string());
    if st.sandboxes.get(&key).is_some_and(|s| s.uid == uid) {
        st.sandboxes.remove(&key);
    }
}

/// What a kubelet does with a pod deleted gracefully (Kubernetes docs, "Pod Lifecycle: Termination of
/// Pods"): run the container's preStop hook, within the grace period, which counts from the deletion;
/// then SIGTERM, and SIGKILL at the period's end (at least 2 s after the hook); then remove the pod
/// object, so its controller may make the replacement. A hook that fails or overruns is an event
/// (`FailedPreStopHook`), not a stop to the termination.
async fn terminate(
    inner: Weak<Inner>,
    (ns, name, uid): (String, String, String),
    pod: Value,
    container: Option<Container>,
) {
    let grace = Duration::from_secs(
        pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30),
    );
    let deadline = tokio::time::Instant::now() + grace;
    let mut stopped = None;
    if let Some(mut c) = container {
        let hook: Vec<String> =
            pod["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
        if !hook.is_empty() {
            let mut cmd = c.exec_command(&hook, &[]);
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let failed = match tokio::time::timeout_at(deadline, cmd.output()).await {
                Ok(Ok(out)) if out.status.success() => None,
                Ok(Ok(out)) => Some(format!(
                    "PreStopHook failed: command {:?} exited with {}: {}",
                    hook,
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Ok(Err(e)) => Some(format!("PreStopHook failed: {e}")),
                Err(_) => Some(format!(
                    "PreStopHook did not finish within the grace period of {grace:?}"
                )),
            };
            if let (Some(msg), Some(inner)) = (failed, inner.upgrade()) {
                let mut st = inner.lock();
                record_event(
                    &mut st,
                    &pod,
                    "Warning",
                    "FailedPreStopHook",
                    &msg,
                    "kubelet",
                );
            }
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(2));
        c.terminate(left).await;
        if let (Ok(text), Some(inner)) = (std::fs::read(&c.log), inner.upgrade()) {
            let keep = &text[text.len().saturating_sub(1 << 20)..];
            inner.lock().logs.insert(
                (ns.clone(), name.clone()),
                String::from_utf8_lossy(keep).into_owned(),
            );
        }
        stopped = Some(c);
    }
    if let Some(inner) = inner.upgrade() {
        forget_sandbox(&inner, &ns, &name, &uid);
        let mut st = inner.lock();
        if st
            .get(POD, &ns, &name)
            .is_some_and(|p| p["metadata"]["uid"] == json!(uid))
        {
            st.remove(POD, &ns, &name);
            sim::reconcile(&mut st);
        }
    }
    // The root's copy goes after the pod object, as a kubelet cleans up after reporting.
    if let Some(c) = stopped {
        c.remove().await;
    }
}

/// Start the container of pod `ns/name` (uid `uid`); `None` when the pod is gone.
async fn start(
    inner: &Arc<Inner>,
    rootfs: &RootFs,
    ns: &str,
    name: &str,
    uid: &str,
    serial: u32,
) -> std::io::Result<Option<(Container, Option<u16>)>> {
    let dir = inner
        .sandbox
        .join("containers")
        .join(format!("{uid}-{serial}"));
    let (spec, probe) = {
        let st = inner.lock();
        let Some(pod) = st
            .get(POD, ns, name)
            .filter(|p| p["metadata"]["uid"] == json!(uid))
        else {
            return Ok(None);
        };
        container_spec(&st, pod, &inner.sandbox, &dir)?
    };
    if dir.join("root").exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let container = Container::start(rootfs, &spec, &dir).await?;
    Ok(Some((container, probe)))
}

fn decode(value: &Value, base64: bool) -> Vec<u8> {
    let text = value.as_str().unwrap_or("");
    if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    }
}

fn mode(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

/// The container as the kubelet would start it: the first container of `pod`, its volumes as host
/// folders, its env with references resolved; and the port of its TCP readiness probe.
fn container_spec(
    st: &State,
    pod: &Value,
    sandbox: &Path,
    dir: &Path,
) -> std::io::Result<(ContainerSpec, Option<u16>)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let c = &pod["spec"]["containers"][0];
    let volumes_dir = dir.join("volumes");
    let mut sources: HashMap<String, (PathBuf, bool)> = HashMap::new();
    let mut memory_dirs: Vec<String> = Vec::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or("");
        let path = volumes_dir.join(vname);
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let volume = st
                .get(PVC, ns, claim)
                .and_then(|c| c["spec"]["volumeName"].as_str())
                .unwrap_or(claim)
                .to_string();
            let host = sandbox.join("volumes").join(volume);
            std::fs::create_dir_all(&host)?;
            sources.insert(vname.into(), (host, false));
        } else if let Some(secret) = v["secret"]["secretName"].as_str() {
            let files: Vec<(String, Vec<u8>)> = st
                .get(SECRET, ns, secret)
                .and_then(|s| s["data"].as_object().cloned())
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, decode(&v, true)))
                .collect();
            project_files(&path, &files, mode(&v["secret"]["defaultMode"], 0o644))?;
            sources.insert(vname.into(), (path, true));
        } else if let Some(cm) = v["configMap"]["name"].as_str() {
            let files: Vec<(String, Vec<u8>)> = st
                .get(CONFIG_MAP, ns, cm)
                .and_then(|c| c["data"].as_object().cloned())
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, decode(&v, false)))
                .collect();
            project_files(&path, &files, mode(&v["configMap"]["defaultMode"], 0o644))?;
            sources.insert(vname.into(), (path, true));
        } else if v.get("emptyDir").is_some() {
            if v["emptyDir"]["medium"] == "Memory" {
                memory_dirs.push(vname.into());
            } else {
                std::fs::create_dir_all(&path)?;
                sources.insert(vname.into(), (path, false));
            }
        }
    }
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap_or("");
        let target = m["mountPath"].as_str().unwrap_or("").to_string();
        if memory_dirs.iter().any(|d| d == vname) {
            tmpfs.push(target);
        } else if let Some((host, projected)) = sources.get(vname) {
            binds.push(Bind {
                host: host.clone(),
                container: target,
                read_only: *projected || m["readOnly"] == json!(true),
            });
        }
    }
    let hostname = pod["spec"]["hostname"]
        .as_str()
        .or(pod["metadata"]["name"].as_str())
        .unwrap_or("pod")
        .to_string();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), IMAGE_PATH.into()),
        ("HOSTNAME".into(), hostname.clone()),
        ("HOME".into(), "/root".into()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let Some(key) = e["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            st.get(SECRET, ns, r["name"].as_str().unwrap_or(""))
                .map(|s| decode(&s["data"][r["key"].as_str().unwrap_or("")], true))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            st.get(CONFIG_MAP, ns, r["name"].as_str().unwrap_or(""))
                .and_then(|m| m["data"][r["key"].as_str().unwrap_or("")].as_str())
                .unwrap_or_default()
                .to_string()
        } else {
            String::new()
        };
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value));
    }
    let argv: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if argv.is_empty() {
        return Err(std::io::Error::other(
            "the container has no command, and the root filesystem image has no entrypoint",
        ));
    }
    let probe = c["readinessProbe"]["tcpSocket"]["port"]
        .as_u64()
        .map(|p| p as u16);
    Ok((
        ContainerSpec {
            argv,
            env,
            working_dir: c["workingDir"].as_str().unwrap_or("").to_string(),
            hostname,
            binds,
            tmpfs,
            devices: Vec::new(),
        },
        probe,
    ))
}

fn update_pod(inner: &Arc<Inner>, ns: &str, name: &str, uid: &str, f: impl FnOnce(&mut Value)) {
    let mut st = inner.lock();
    let Some(mut pod) = st
        .get(POD, ns, name)
        .filter(|p| p["metadata"]["uid"] == json!(uid))
        .cloned()
    else {
        return;
    };
    f(&mut pod);
    st.update(POD, pod);
    sim::reconcile(&mut st);
}

fn set_ready(inner: &Arc<Inner>, ns: &str, name: &str, uid: &str, ready: bool, restarts: u32) {
    update_pod(inner, ns, name, uid, |pod| {
        let t = now();
        for c in pod["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["ready"] = json!(ready);
            c["restartCount"] = json!(restarts);
        }
        let status = if ready { "True" } else { "False" };
        for c in pod["status"]["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!(status);
                c["lastTransitionTime"] = json!(t);
            }
        }
    });
}

fn container_exited(
    inner: &Arc<Inner>,
    ns: &str,
    name: &str,
    uid: &str,
    code: i32,
    restarts: u32,
    log: &str,
) {
    let tail: String = log
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    update_pod(inner, ns, name, uid, |pod| {
        let t = now();
        for c in pod["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["ready"] = json!(false);
            c["restartCount"] = json!(restarts);
            c["lastState"] = json!({"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "message": tail, "finishedAt": t,
            }});
            c["state"] = json!({"running": {"startedAt": t}});
        }
    });
    let mut st = inner.lock();
    if let Some(pod) = st.get(POD, ns, name).cloned() {
        let msg = format!("Container exited with code {code}; restarting it");
        record_event(&mut st, &pod, "Warning", "BackOff", &msg, "kubelet");
    }
}
