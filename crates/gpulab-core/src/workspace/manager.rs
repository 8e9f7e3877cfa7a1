//! The workspace through the Kubernetes API: apply its objects, wait for the pod, and say in words why
//! a pod is not ready.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, LogParams};

use super::{Endpoint, WorkspaceInfo, WorkspaceManager, WorkspaceSecrets, manifests};
use crate::cluster::{cluster_error, is_not_found};
use crate::events::{Event, Reporter};
use crate::naming::{GPU_RESOURCE, KubeNames, LAB_KEY};
use crate::spec::{AccessMode, SshKey, ValidSpec};
use crate::{Error, Result};

/// Longest pause between two looks at a pod that is not ready yet.
const MAX_POLL: Duration = Duration::from_secs(5);

/// The workspace manager over the Kubernetes API; it holds no state of its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct KubeWorkspace;

/// A fresh ed25519 host key, OpenSSH-encoded: (private, public).
pub fn generate_host_key(comment: &str) -> Result<(String, String)> {
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::ssh_key::{LineEnding, PrivateKey};
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| {
        Error::io(
            "read the system's random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| Error::io("encode the host key", std::io::Error::other(e.to_string())))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::io("encode the host key", std::io::Error::other(e.to_string())))?;
    Ok((private.to_string(), public))
}

/// A random token for Jupyter: 32 bytes, hex.
pub fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "read the system's random source",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    from_data.or_else(|| {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    })
}

impl KubeWorkspace {
    /// The workspace's secrets: the host key and token already in the cluster, else new ones, and the
    /// user's public key.
    pub async fn secrets(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
    ) -> Result<WorkspaceSecrets> {
        let names = KubeNames::new(&spec.spec);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
        let existing = |name: String| {
            let secrets = secrets.clone();
            async move {
                match secrets.get(&name).await {
                    Ok(secret) => Ok(Some(secret)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(cluster_error(&format!("read secret {name}"), e)),
                }
            }
        };
        let (host, jupyter) = tokio::try_join!(
            existing(names.host_key.clone()),
            existing(names.jupyter_token.clone())
        )?;
        let kept_host = host.as_ref().and_then(|s| {
            Some((
                secret_value(s, "ssh_host_ed25519_key")?,
                secret_value(s, "ssh_host_ed25519_key.pub")?,
            ))
        });
        let (host_private_key, host_public_key) = match kept_host {
            Some(pair) => pair,
            None => generate_host_key(&format!("gpulab-{}", spec.spec.name))?,
        };
        let jupyter_token = match jupyter.as_ref().and_then(|s| secret_value(s, "token")) {
            Some(token) => token,
            None => generate_token()?,
        };
        let authorized_keys = match &spec.ssh_key {
            SshKey::Existing { public_key, .. } => public_key.clone(),
            SshKey::Generate { path } => {
                let public = format!("{}.pub", path.display());
                std::fs::read_to_string(&public)
                    .map(|k| k.trim().to_string())
                    .map_err(|e| {
                        Error::io(
                            format!("read the SSH public key {public} (gpulab up creates it)"),
                            e,
                        )
                    })?
            }
        };
        Ok(WorkspaceSecrets {
            authorized_keys,
            host_private_key,
            host_public_key,
            jupyter_token,
        })
    }
}

#[async_trait]
impl WorkspaceManager for KubeWorkspace {
    async fn apply(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo> {
        let step = "create the workspace".to_string();
        reporter.report(Event::StepStarted { step: step.clone() });
        let started = Instant::now();
        // The namespace first: the secrets are looked up in it.
        let objects = manifests(spec, &WorkspaceSecrets::placeholders(spec));
        // A namespace someone else made is used as it is, never taken over: `down` deletes only the
        // lab's own.
        let take_namespace = namespace_owner(client, spec).await? != NamespaceOwner::SomeoneElse;
        if let Some(namespace) = objects.iter().find(|o| o.kind() == "Namespace")
            && take_namespace
        {
            namespace.apply(client).await?;
        }
        let secrets = self.secrets(client, spec).await?;
        for object in manifests(spec, &secrets) {
            if object.kind() == "Namespace" && !take_namespace {
                continue;
            }
            object.apply(client).await?;
        }
        reporter.report(Event::StepFinished {
            step,
            elapsed: started.elapsed(),
            already_done: false,
        });
        self.status(client, spec).await
    }

    async fn wait_ready(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo> {
        let step = "wait for the workspace".to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let info = self.status(client, spec).await?;
            if info.ready {
                reporter.report(Event::StepFinished {
                    step,
                    elapsed: started.elapsed(),
                    already_done: false,
                });
                return Ok(info);
            }
            let problem = info
                .problem
                .clone()
                .unwrap_or_else(|| format!("pod phase {}", info.phase));
            if let Some(fatal) = fatal_problem(&info) {
                return Err(fatal);
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("workspace pod {}", info.pod),
                    waited: timeout,
                    pending: problem,
                });
            }
            reporter.report(Event::Waiting {
                step: step.clone(),
                on: problem,
                elapsed: started.elapsed(),
            });
            tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    async fn status(&self, client: &kube::Client, spec: &ValidSpec) -> Result<WorkspaceInfo> {
        let names = KubeNames::new(&spec.spec);
        let ns = names.namespace.as_str();
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let (pod, claim, host_key, load_balancer) = tokio::join!(
            get_opt(&pods, &names.pod),
            get_opt(&claims, &names.volume),
            get_opt(&secrets, &names.host_key),
            get_opt(&services, &names.load_balancer),
        );
        let (pod, claim, host_key, load_balancer) = (pod?, claim?, host_key?, load_balancer?);

        let endpoint = match spec.spec.access.mode {
            AccessMode::PortForward => Endpoint::PortForward {
                namespace: ns.into(),
                pod: names.pod.clone(),
            },
            AccessMode::LoadBalancer => Endpoint::LoadBalancer {
                address: load_balancer
                    .and_then(|s| s.status?.load_balancer?.ingress?.into_iter().next())
                    .and_then(|i| i.hostname.or(i.ip)),
            },
        };
        let volume = claim.map(|c| {
            let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            (names.volume.clone(), bound)
        });
        let status = pod.as_ref().and_then(|p| p.status.as_ref());
        let phase = match (&pod, status.and_then(|s| s.phase.clone())) {
            (None, _) => "absent".to_string(),
            (Some(_), phase) => phase.unwrap_or_else(|| "Pending".into()),
        };
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        let gpus = pod
            .as_ref()
            .and_then(|p| {
                p.spec
                    .as_ref()?
                    .containers
                    .first()?
                    .resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get(GPU_RESOURCE)
                    .cloned()
            })
            .and_then(|q| q.0.parse().ok())
            .unwrap_or(0);
        let mut info = WorkspaceInfo {
            namespace: ns.into(),
            pod: names.pod.clone(),
            phase,
            ready,
            node: pod
                .as_ref()
                .and_then(|p| p.spec.as_ref()?.node_name.clone()),
            gpus,
            endpoint,
            host_public_key: host_key.and_then(|s| secret_value(&s, "ssh_host_ed25519_key.pub")),
            volume,
            problem: None,
        };
        if !ready {
            let setup_progress = match &pod {
                Some(_) if info.phase == "Running" => last_setup_line(&pods, &names.pod).await,
                _ => None,
            };
            info.problem = Some(diagnose(pod.as_ref(), &info, setup_progress));
        }
        Ok(info)
    }

    async fn delete(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        keep_volume: bool,
    ) -> Result<()> {
        let objects = manifests(spec, &WorkspaceSecrets::placeholders(spec));
        for object in objects.iter().rev() {
            let keep = matches!(
                object.kind(),
                "PersistentVolumeClaim" | "Namespace" | "StorageClass"
            );
            if keep_volume && keep {
                continue;
            }
            if object.kind() == "Namespace"
                && namespace_owner(client, spec).await? != NamespaceOwner::ThisLab
            {
                continue;
            }
            object.delete(client).await?;
        }
        Ok(())
    }
}

/// Who the lab's namespace belongs to, by the lab label gpulab puts on the namespaces it creates.
#[derive(Debug, PartialEq, Eq)]
enum NamespaceOwner {
    /// It does not exist.
    Nobody,
    /// It carries this lab's label.
    ThisLab,
    /// It exists without this lab's label (`default`, a team's namespace, another lab's).
    SomeoneElse,
}

async fn namespace_owner(client: &kube::Client, spec: &ValidSpec) -> Result<NamespaceOwner> {
    let names = KubeNames::new(&spec.spec);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Ok(match get_opt(&namespaces, &names.namespace).await? {
        None => NamespaceOwner::Nobody,
        Some(namespace) => {
            let ours = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LAB_KEY))
                .is_some_and(|lab| *lab == spec.spec.name);
            if ours {
                NamespaceOwner::ThisLab
            } else {
                NamespaceOwner::SomeoneElse
            }
        }
    })
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(cluster_error(&format!("read {name}"), e)),
    }
}

/// The last line the setup script logged, to show what a running but unready pod is doing.
async fn last_setup_line(pods: &Api<Pod>, pod: &str) -> Option<String> {
    let params = LogParams {
        tail_lines: Some(20),
        ..Default::default()
    };
    let logs = pods.logs(pod, &params).await.ok()?;
    logs.lines()
        .rev()
        .find(|l| l.starts_with("[gpulab-setup]"))
        .map(|l| l.trim_start_matches("[gpulab-setup] ").to_string())
}

/// Why the pod is not ready, in words, with what to do.
fn diagnose(pod: Option<&Pod>, info: &WorkspaceInfo, setup_progress: Option<String>) -> String {
    let Some(pod) = pod else {
        return "the workspace pod does not exist; `gpulab up` creates it".into();
    };
    let status = pod.status.clone().unwrap_or_default();
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(condition) = unscheduled {
        let message = condition.message.clone().unwrap_or_default();
        let advice = if message.contains(&format!("Insufficient {GPU_RESOURCE}")) {
            "no node has a free GPU: the device plugin may not have advertised the GPUs yet, or another pod holds them (`gpulab status`)"
        } else if message.contains("untolerated taint") {
            "the only nodes are tainted against this pod; GPU nodes need the toleration gpulab adds"
        } else if message.contains("node affinity/selector") {
            "no node matches the pod's node selector"
        } else if message.contains("unbound") && message.contains("PersistentVolumeClaim") {
            "the /workspace volume is not bound: is the EBS CSI driver (or the named storage class) installed?"
        } else if message.starts_with("0/0 nodes") || message.contains("no nodes available") {
            "the cluster has no nodes yet: the GPU node group is starting, or scaled to zero"
        } else {
            "the scheduler cannot place it"
        };
        return format!("not scheduled: {advice} ({message})");
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.clone());
    if let Some(waiting) = waiting {
        let reason = waiting.reason.unwrap_or_default();
        let message = waiting.message.unwrap_or_default();
        return match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => format!(
                "cannot pull the image ({reason}: {message}); check workspace.image, and for ECR that the node role may read it"
            ),
            "CrashLoopBackOff" => {
                "the setup script keeps failing; `kubectl logs` on the pod shows why".into()
            }
            "ContainerCreating" | "" => {
                "starting the container (pulling a CUDA image takes minutes the first time)".into()
            }
            other => format!("container waiting: {other} {message}"),
        };
    }
    match (info.volume.as_ref(), setup_progress) {
        (Some((_, false)), _) => "waiting for the /workspace volume to be bound".into(),
        (_, Some(line)) => format!("setting up: {line}"),
        _ if info.phase == "Running" => {
            "setting up (the first start installs packages for 5-10 minutes)".into()
        }
        _ => format!("pod phase {}", info.phase),
    }
}

/// Problems that waiting will not fix.
fn fatal_problem(info: &WorkspaceInfo) -> Option<Error> {
    let problem = info.problem.as_deref()?;
    (problem.contains("InvalidImageName")).then(|| Error::Workspace {
        message: problem.to_string(),
        hint: Some("fix workspace.image and run `gpulab up` again".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_and_tokens_are_fresh_and_well_formed() {
        let (private, public) = generate_host_key("gpulab-test").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(public.starts_with("ssh-ed25519 AAAA"));
        assert_ne!(generate_host_key("x").unwrap().1, public);
        let token = generate_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(generate_token().unwrap(), token);
    }
}
