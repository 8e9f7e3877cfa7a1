//! The workspace through the Kubernetes API: apply its objects, wait for the pod, and say in words why
//! a pod is not ready.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, LogParams};

use super::{Endpoint, VolumeClass, WorkspaceInfo, WorkspaceManager, WorkspaceSecrets, manifests};
use crate::cluster::{Deletion, changes_of, cluster_error, is_not_found};
use crate::events::{Reporter, reported_step};
use crate::manifest::ApplyOwned;
use crate::naming::{GPU_RESOURCE, KubeNames, LabId};
use crate::provision::{LeftAlone, ResourceKind, ResourceRef};
use crate::spec::{AccessMode, SshKey, ValidSpec};
use crate::wait::{self, Backoff, Check, Wait};
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
        let (host, jupyter, activity) = tokio::try_join!(
            existing(names.host_key.clone()),
            existing(names.jupyter_token.clone()),
            existing(names.activity_token.clone())
        )?;
        let kept_host = host.as_ref().and_then(|s| {
            Some((
                secret_value(s, "ssh_host_ed25519_key")?,
                secret_value(s, "ssh_host_ed25519_key.pub")?,
            ))
        });
        let (host_private_key, host_public_key) = match kept_host {
            Some(pair) => pair,
            None => generate_host_key(&format!("gpulab-{}", spec.name()))?,
        };
        let jupyter_token = match jupyter.as_ref().and_then(|s| secret_value(s, "token")) {
            Some(token) => token,
            None => generate_token()?,
        };
        let activity_token = match activity.as_ref().and_then(|s| secret_value(s, "token")) {
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
            activity_token,
        })
    }
}

#[async_trait]
impl WorkspaceManager for KubeWorkspace {
    async fn apply(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        class: &VolumeClass,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo> {
        reported_step(reporter, "create the workspace", async {
            // The namespace first: the secrets are looked up in it.
            let objects = manifests(spec, id, class, &WorkspaceSecrets::placeholders(spec));
            // A namespace someone else made is used as it is, never taken over: `down` deletes only
            // the lab's own.
            let take_namespace =
                namespace_owner(client, spec, id).await? != NamespaceOwner::SomeoneElse;
            if let Some(namespace) = objects.iter().find(|o| o.kind() == "Namespace")
                && take_namespace
            {
                namespace.apply_owned(client, id).await?;
            }
            let secrets = self.secrets(client, spec).await?;
            for object in manifests(spec, id, class, &secrets) {
                if object.kind() == "Namespace" && !take_namespace {
                    continue;
                }
                object.apply_owned(client, id).await?;
            }
            Ok::<_, Error>(((), false))
        })
        .await?;
        self.status(client, spec, id).await
    }

    async fn wait_ready(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceInfo> {
        let step = "wait for the workspace";
        let names = KubeNames::new(&spec.spec);
        let what = format!("workspace pod {}", names.pod);
        // The pod's changes wake the wait at once (scheduled, started, ready); the pauses remain for
        // what a pod watch does not show (events, the claim) and for a watch the server ends.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &names.namespace);
        let changes = changes_of(&pods, &names.pod).await;
        let wait = Wait {
            step,
            what: &what,
            timeout,
            backoff: Backoff {
                first: Duration::from_millis(200),
                max: MAX_POLL,
            },
        };
        reported_step(reporter, step, async {
            let check = || async {
                let info = self.status(client, spec, id).await?;
                if info.ready {
                    return Ok(Check::Done(info));
                }
                if let Some(fatal) = fatal_problem(&info) {
                    return Err(fatal);
                }
                let problem = info.problem.clone();
                Ok(Check::Pending(
                    problem.unwrap_or_else(|| format!("pod phase {}", info.phase)),
                ))
            };
            let info = wait::until_woken(reporter, wait, check, changes).await?;
            Ok((info, false))
        })
        .await
    }

    async fn status(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
    ) -> Result<WorkspaceInfo> {
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
        // Same-named objects of someone else's are not the lab's workspace: not read as its.
        let ours =
            |labels: Option<&std::collections::BTreeMap<String, String>>| id.owns_map(labels);
        let foreign_pod = pod
            .as_ref()
            .is_some_and(|p| !ours(p.metadata.labels.as_ref()));
        let pod = pod.filter(|p| ours(p.metadata.labels.as_ref()));
        let claim = claim.filter(|c| ours(c.metadata.labels.as_ref()));
        let host_key = host_key.filter(|s| ours(s.metadata.labels.as_ref()));
        let load_balancer = load_balancer.filter(|s| ours(s.metadata.labels.as_ref()));

        let endpoint = match spec.access().mode {
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
        // A pod being deleted keeps its Ready condition while its preStop hook and grace period run
        // (a drained node, a spot interruption): it is on its way out, not ready for the user.
        let terminating = pod
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        let phase = if terminating {
            "Terminating".to_string()
        } else {
            phase
        };
        let ready = !terminating
            && status
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
        if foreign_pod {
            info.phase = "not this lab's".into();
            info.problem = Some(format!(
                "a pod named {} in namespace {ns} does not carry the label {}={id}: it is someone else's, and gpulab leaves it alone; give the lab's workspace another name (--pod-name)",
                names.pod,
                crate::naming::LAB_ID_KEY
            ));
            return Ok(info);
        }
        if !ready {
            let setup_progress = match &pod {
                Some(_) if info.phase == "Running" => last_setup_line(&pods, &names.pod).await,
                _ => None,
            };
            let mut problem = diagnose(pod.as_ref(), &info, setup_progress);
            // The kubelet's ImagePullBackOff says only "Back-off pulling image"; why the pull failed
            // (the image does not exist, access denied) is in its last `Failed` event.
            if problem.starts_with("cannot pull the image")
                && let Some(why) = pull_failure(client, ns, &names.pod).await
            {
                problem = format!("{problem}; the last pull: {why}");
            }
            if let Some(cause) = cluster_cause(client, &names, &info).await {
                problem = format!("{problem}; {cause}");
            }
            info.problem = Some(problem);
        }
        Ok(info)
    }

    async fn delete(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        keep_volume: bool,
    ) -> Result<Vec<LeftAlone>> {
        // Every object the lab may have made, whichever volume class it was made with.
        let mut objects = manifests(
            spec,
            id,
            &VolumeClass::Lab,
            &WorkspaceSecrets::placeholders(spec),
        );
        objects.retain(|o| {
            !(keep_volume
                && matches!(
                    o.kind(),
                    "PersistentVolumeClaim" | "Namespace" | "StorageClass"
                ))
        });
        let mut left_alone = Vec::new();
        for object in objects.iter().rev() {
            match object.delete_owned(client, id).await? {
                Deletion::Deleted | Deletion::Absent => {}
                // A namespace someone else made was used as a guest; that is no news.
                Deletion::NotOurs if object.kind() == "Namespace" => {}
                Deletion::NotOurs => left_alone.push(LeftAlone {
                    resource: ResourceRef::new(
                        ResourceKind::Kubernetes(object.kind().to_string()),
                        match object.namespace() {
                            Some(ns) => format!("{ns}/{}", object.name()),
                            None => object.name().to_string(),
                        },
                    ),
                    reason: format!("it lacks the label {}={id}", crate::naming::LAB_ID_KEY),
                }),
            }
        }
        Ok(left_alone)
    }
}

/// Who the lab's namespace belongs to, by the lab label gpulab puts on the namespaces it creates.
#[derive(Debug, PartialEq, Eq)]
enum NamespaceOwner {
    /// It does not exist.
    Nobody,
    /// It carries this lab's ID.
    ThisLab,
    /// It exists without this lab's ID (`default`, a team's namespace, another lab's).
    SomeoneElse,
}

async fn namespace_owner(
    client: &kube::Client,
    spec: &ValidSpec,
    id: &LabId,
) -> Result<NamespaceOwner> {
    let names = KubeNames::new(&spec.spec);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Ok(match get_opt(&namespaces, &names.namespace).await? {
        None => NamespaceOwner::Nobody,
        Some(namespace) => {
            if id.owns_map(namespace.metadata.labels.as_ref()) {
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

/// The message of the pod's latest `Failed` event (a pull failure, in the kubelet's words).
async fn pull_failure(client: &kube::Client, ns: &str, pod: &str) -> Option<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let params = kube::api::ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let list = events.list(&params).await.ok()?;
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Failed"))
        .filter_map(|e| Some((e.last_timestamp.clone(), e.message?)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, message)| message)
}

/// Pull failures that waiting cannot fix: the image or tag does not exist (a CUDA tag past its
/// support window is deleted from the registry: "manifest unknown"), or the node may not read it.
const PERMANENT_PULL_FAILURES: &[&str] = &[
    "not found",
    "manifest unknown",
    "NotFound",
    "repository does not exist",
    "pull access denied",
    "unauthorized",
    "403 Forbidden",
    "InvalidImageName",
    "no match for platform",
];

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
    if pod.metadata.deletion_timestamp.is_some() {
        return "the workspace pod is stopping (deleted, or its node drained: a spot interruption, a node replacement or a stop); its StatefulSet makes it again with the same /workspace once it is gone".into();
    }
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
        } else if message.contains("Insufficient cpu") || message.contains("Insufficient memory") {
            "it asks for more CPU or memory than the node has left beside kubelet's reservations and the system pods: lower workspace.cpu / workspace.memory, or leave them \"auto\" (`gpulab plan` shows what a node leaves)"
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
    if let Some((_, false)) = &info.volume {
        return "waiting for the /workspace volume to be bound".into();
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
    match setup_progress {
        Some(line) => format!("setting up: {line}"),
        None if info.phase == "Running" => {
            "setting up (the first start installs packages for 5-10 minutes)".into()
        }
        _ => format!("pod phase {}", info.phase),
    }
}

/// What in the cluster keeps a workspace that is not ready from getting there, when it is not the pod
/// itself: the volume's provisioner (its last warning event on the claim, e.g. the EBS CSI driver's
/// `ProvisioningFailed` for want of credentials), or cluster DNS (CoreDNS pods exist and none is
/// ready, so the setup cannot resolve package mirrors). Best effort: `None` when nothing is found or
/// the cluster cannot be read.
async fn cluster_cause(
    client: &kube::Client,
    names: &KubeNames,
    info: &WorkspaceInfo,
) -> Option<String> {
    use k8s_openapi::api::core::v1::Event as KubeEvent;
    use kube::api::ListParams;

    if let Some((_, false)) = &info.volume {
        let events: Api<KubeEvent> = Api::namespaced(client.clone(), &names.namespace);
        let about_claim = ListParams::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={}",
            names.volume
        ));
        let list = events.list(&about_claim).await.ok()?;
        let last = list
            .items
            .iter()
            .filter(|e| {
                matches!(
                    e.reason.as_deref(),
                    Some("ProvisioningFailed" | "ExternalProvisioning")
                )
            })
            .max_by_key(|e| e.metadata.resource_version.clone().unwrap_or_default())?;
        return Some(format!(
            "the volume's provisioner says {}: {} (is the EBS CSI driver running, with its Pod Identity association?)",
            last.reason.as_deref().unwrap_or_default(),
            last.message.as_deref().unwrap_or_default()
        ));
    }
    if info.phase == "Running" {
        let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
        let dns = system
            .list(&ListParams::default().labels("k8s-app=kube-dns"))
            .await
            .ok()?;
        let ready = dns.items.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if !dns.items.is_empty() && !ready {
            return Some(format!(
                "cluster DNS is down: none of {} CoreDNS pods is ready, so the setup cannot reach package mirrors (`kubectl -n kube-system get pods -l k8s-app=kube-dns`; CoreDNS stays Pending when every node has a taint it does not tolerate)",
                dns.items.len()
            ));
        }
    }
    None
}

/// Problems that waiting will not fix.
fn fatal_problem(info: &WorkspaceInfo) -> Option<Error> {
    let problem = info.problem.as_deref()?;
    if info.phase == "not this lab's" {
        return Some(Error::Workspace {
            message: problem.to_string(),
            hint: None,
        });
    }
    let pull = problem.starts_with("cannot pull the image");
    (pull && PERMANENT_PULL_FAILURES.iter().any(|m| problem.contains(m))).then(|| {
        Error::Workspace {
            message: problem.to_string(),
            hint: Some(
                "the image or its tag does not exist (or the node may not read it): fix workspace.image (\"auto\" takes the version matrix's current CUDA image, `gpulab plan` shows it) and run `gpulab up` again".into(),
            ),
        }
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

/// What deleting the workspace set going in the cloud: the LoadBalancer Service's load balancer (the
/// Service stays, behind its finalizer, until the cloud provider deleted it) and the volume's EBS volume
/// (its PersistentVolume stays until the CSI driver deleted it). Read before the delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudRelease {
    /// The LoadBalancer Service's name, when the lab has one.
    pub load_balancer: Option<String>,
    /// The PersistentVolume bound to the workspace's claim, when the claim goes too.
    pub volume: Option<String>,
}

impl CloudRelease {
    /// What lab `id`'s workspace holds in the cloud now. A same-named Service or claim that is not the
    /// lab's is not counted: `down` leaves it alone, so it would never be released.
    pub async fn find(
        client: &kube::Client,
        spec: &ValidSpec,
        id: &LabId,
        keep_volume: bool,
    ) -> Result<Self> {
        let names = KubeNames::new(&spec.spec);
        let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);
        let load_balancer = get_opt(&services, &names.load_balancer)
            .await?
            .filter(|s| id.owns_map(s.metadata.labels.as_ref()))
            .map(|_| names.load_balancer.clone());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &names.namespace);
        let claimed = match keep_volume {
            true => None,
            false => get_opt(&claims, &names.volume)
                .await?
                .filter(|c| id.owns_map(c.metadata.labels.as_ref()))
                .and_then(|c| c.spec?.volume_name),
        };
        // Only a volume whose reclaim policy is Delete goes with its claim (a retained one stays, by its
        // class's design); one the caller may not read is not waited for.
        let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
        let volume = match claimed {
            Some(name) => get_opt(&volumes, &name)
                .await
                .ok()
                .flatten()
                .filter(|pv| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                        == Some("Delete")
                })
                .map(|_| name),
            None => None,
        };
        Ok(CloudRelease {
            load_balancer,
            volume,
        })
    }

    /// Wait until the cloud resources are released (the Service and the PersistentVolume gone), so the
    /// nodes running the cloud provider's and the CSI driver's controllers outlive the work. `Ok(false)`
    /// when `timeout` passed first: teardown's sweep deletes what is left by the lab's tags.
    pub async fn wait(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        timeout: Duration,
        reporter: &dyn Reporter,
    ) -> Result<bool> {
        let names = KubeNames::new(&spec.spec);
        let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);
        let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
        let wait = Wait {
            step: "release the load balancer and volume",
            what: "the load balancer and volume to be released",
            timeout,
            backoff: Backoff::fixed(Duration::from_secs(2)),
        };
        // Each object's deletion wakes the wait (the load balancer and the volume go minutes apart).
        let mut changes = Vec::new();
        if let Some(name) = &self.load_balancer {
            changes.push(changes_of(&services, name).await);
        }
        if let Some(name) = &self.volume {
            changes.push(changes_of(&volumes, name).await);
        }
        let changes = futures::stream::select_all(changes);
        let check = || async {
            let mut pending = Vec::new();
            if let Some(name) = &self.load_balancer
                && get_opt(&services, name).await?.is_some()
            {
                pending.push(format!("the load balancer of Service {name}"));
            }
            if let Some(name) = &self.volume
                && get_opt(&volumes, name).await?.is_some()
            {
                pending.push(format!("the EBS volume of {name}"));
            }
            Ok(if pending.is_empty() {
                Check::Done(())
            } else {
                Check::Pending(pending.join(" and "))
            })
        };
        let released = wait::until_woken(reporter, wait, check, changes).await;
        match released {
            Ok(()) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
