//! An in-process Kubernetes API server for tests: real HTTP/1.1 on a loopback port, spoken to by
//! kube-rs and by the real `kubectl` through a kubeconfig, over a simulated cluster whose nodes the
//! test adds.
//!
//! ```no_run
//! # async fn demo() {
//! use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
//! let emu = KubeEmulator::start().await.unwrap();
//! emu.add_node(NodeSpec::gpu("gpu-1"));
//! let client = emu.client(); // a kube::Client
//! # }
//! ```
//!
//! # What it serves
//!
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/v1` (legacy
//!   documents; clients asking for aggregated discovery fall back to them), `/healthz`, `/livez`,
//!   `/readyz`. `/openapi/v3` serves skeleton documents (no schemas) whose PATCH operations accept
//!   `fieldValidation`, so `kubectl apply` leaves validation to the server (which does not validate
//!   fields); `/openapi/v2` answers 404.
//! - Kinds: namespaces, nodes, pods, services, secrets, configmaps, persistentvolumeclaims,
//!   persistentvolumes, events, serviceaccounts (core/v1); daemonsets, deployments (apps/v1);
//!   storageclasses and csidrivers (storage.k8s.io/v1).
//! - Verbs: get, list (all namespaces or one; `labelSelector` with `=`, `==`, `!=`, `in`, `notin`,
//!   exists and `!`; `fieldSelector` on any dotted path with `=`, `==`, `!=`), watch (`watch=true`,
//!   `resourceVersion` to resume, `410 Expired` when it is older than the kept log,
//!   `allowWatchBookmarks` → periodic `BOOKMARK`s, `sendInitialEvents` with the
//!   `k8s.io/initial-events-end` bookmark, `timeoutSeconds`, objects entering or leaving a selector
//!   seen as `ADDED`/`DELETED`), create (`generateName`, `dryRun=All`), update (`409 Conflict` on a
//!   stale `resourceVersion`), patch (`application/merge-patch+json`,
//!   `application/strategic-merge-patch+json`, `application/json-patch+json`,
//!   `application/apply-patch+yaml`), delete (with `preconditions`), deletecollection; the `status`
//!   subresource of every kind that has one; `pods/log`, `pods/exec`, `pods/portforward`.
//! - Metadata-only lists (`as=PartialObjectMetadataList`, kube-rs `list_metadata`).
//! - `kubectl get` tables (`as=Table`) with the usual columns for pods, nodes, daemonsets, services,
//!   PVCs, namespaces, configmaps, secrets and events.
//! - Errors as `metav1.Status` in the real shapes: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
//!   `BadRequest`, `MethodNotAllowed`, `Expired`, `InternalError`.
//!
//! # The simulated cluster
//!
//! Controllers run synchronously after every write, so a test sees their effect on its next request:
//! - the scheduler binds a pending pod to the first node (by name) where its requests (cpu, memory,
//!   `nvidia.com/gpu`, any extended resource, pod count), taints and tolerations, nodeSelector and
//!   required node affinity fit; otherwise the pod gets `PodScheduled=False`, reason `Unschedulable`,
//!   and a `FailedScheduling` event whose message has the real scheduler's form
//!   (`0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint
//!   {nvidia.com/gpu: true}. preemption: ...`). Pending pods are retried after every change.
//! - the kubelet starts scheduled pods: Running, Ready, container statuses, pod IP. It holds them in
//!   `ContainerCreating` (event `FailedMount`) while a configmap, secret or claim they mount is missing
//!   or unbound, and in `ImagePullBackOff` for images the test made unpullable
//!   ([`KubeEmulator::fail_image_pulls`]).
//! - the DaemonSet controller runs one pod per node that its template's selector, affinity and
//!   tolerations accept, replaces them all when the template changes, and keeps the status counts.
//! - the device plugin: a node with GPUs advertises `nvidia.com/gpu` in capacity and allocatable only
//!   while a Running pod whose image contains `k8s-device-plugin` is on it, times the time-slicing
//!   `replicas` read (when that pod started) from the config map it mounts
//!   (`sharing.timeSlicing.resources[{name: nvidia.com/gpu, replicas}]`); `0` once the plugin is gone.
//! - claims bind to a created PersistentVolume, at once or, for a `WaitForFirstConsumer` class (the
//!   default `gp2`, as on EKS), once a scheduled pod uses them; LoadBalancer services get an ELB-like
//!   `status.loadBalancer.ingress[0].hostname`; the garbage collector deletes objects whose owners are
//!   gone, and volumes whose claims are gone; deleting a namespace deletes what is in it.
//!
//! exec runs the command for real on this machine, with the pod's sandbox directory
//! ([`KubeEmulator::pod_dir`]) as the working directory, over WebSocket (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`): stdin on channel 0 (v5: closed by `255 0`), stdout 1, stderr 2, and the exit
//! status as a `metav1.Status` on channel 3 (`NonZeroExitCode` with an `ExitCode` cause).
//! port-forward connects each port to the address the test registered
//! ([`KubeEmulator::register_port`]), in the three ways clients speak it: the channel protocol over
//! WebSocket (`v4.channel.k8s.io`/`portforward.k8s.io`, ports in the query, as kube-rs speaks it),
//! SPDY/3.1 tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl's default
//! since 1.31), and SPDY/3.1 on the connection after `Upgrade: SPDY/3.1` (kubectl's fallback). With
//! SPDY, each connection is an `error` and a `data` stream sharing a `requestID`, the port in their
//! headers; header blocks are zlib with the SPDY/3 dictionary; flow control is not enforced (as in
//! spdystream, the library kubectl uses), and a failure to connect is written to the error stream.
//!
//! # What it does not model
//!
//! - Authentication, authorization, admission webhooks, TLS (the server is plain `http://`).
//! - SPDY for exec: `kubectl exec` and `kubectl cp` work over WebSocket (kubectl's default since
//!   1.30), not through their SPDY fallback. `attach` is refused.
//! - Exec runs on the host, not in a container (absolute paths, users and installed tools are the
//!   host's), except for pods run for real ([`KubeEmulator::run_containers`]: a debootstrap root in
//!   bubblewrap, see [`crate::rootfs`]); a TTY is not allocated (its output merges stderr into stdout;
//!   resize is ignored).
//! - Server-side apply is approximate: the applied configuration is merged (strategic-merge style) into
//!   the object and fields the same manager applied before but no longer applies are removed; there is
//!   no per-field ownership across managers, so no apply conflicts, and `force` is ignored.
//!   `managedFields` holds one entry per manager with empty `fieldsV1`.
//! - Strategic merge uses guessed merge keys (`name`, `mountPath`, `containerPort`, `port`, `type`,
//!   `uid`) instead of the schema's, and ignores `$setElementOrder`, `$retainKeys` and
//!   `$deleteFromPrimitiveList`.
//! - Validation is minimal (names, containers with a name and image, DaemonSet selector vs template
//!   labels); pod specs are not immutable; unknown fields are kept; resourceVersions are not
//!   per-object-ordered beyond one global counter; list `limit`/`continue` return everything at once.
//! - Graceful deletion: a pod run for real ([`KubeEmulator::run_containers`]) is marked Terminating
//!   and goes once its preStop hook, SIGTERM and grace period have run; every other object vanishes at
//!   once (a deleted pod is returned with a `deletionTimestamp`, then is gone), a namespace's pods
//!   included; outside the real mode no container ever exits, restarts or crash-loops;
//!   readiness and liveness probes are not run (containers are Ready at once); a pod bound by
//!   `spec.nodeName` is not checked for fit; no preemption, scoring, pod (anti-)affinity, topology
//!   spread, resource quotas or limit ranges; DaemonSet rolling updates are instantaneous.
//! - Deployments are stored but no controller acts on them; no ReplicaSets, Jobs, endpoints, or
//!   service accounts/tokens created for new namespaces; pod logs are only what the test sets.
//! - A device plugin config change only takes effect when the plugin pod is replaced (as in reality),
//!   and its config is read from any key of the mounted config map, not only `CONFIG_FILE`'s.

mod containers;
mod delay;
mod dial;
mod patch;
mod resources;
mod select;
mod server;
mod shared;
mod sim;
mod spdy;
mod store;
mod stream;
mod tables;
mod watches;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpulab_core::naming::{GPU_NODE_LABEL, GPU_RESOURCE, GPU_TAINT};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use shared::Inner;
use store::{State, now};

/// The service account annotation the emulated Pod Identity agent sets once an association exists (a
/// test-side mark standing in for the credentials the agent would serve): the EBS CSI controller
/// provisions volumes only with it or an IRSA role (see [`crate::eks_world`], which sets it).
pub const POD_IDENTITY_MARK: &str = "testkit.gpulab.io/pod-identity-role";
/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A simulated node, as the test describes it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Labels besides the ones every node gets (`kubernetes.io/hostname`, `kubernetes.io/os`, ...).
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// CPU capacity (a quantity: `4`, `3920m`).
    pub cpu: String,
    /// Memory capacity (a quantity: `16Gi`).
    pub memory: String,
    /// Physical GPUs; advertised as `nvidia.com/gpu` only once the device plugin runs on the node.
    pub gpus: u64,
    /// Its availability zone (`topology.kubernetes.io/zone`).
    pub zone: String,
    /// CPU and memory kubelet offers pods, when below capacity (kubelet's reservations); `None`:
    /// all of it.
    pub allocatable: Option<(String, String)>,
    /// The most pods kubelet runs (its `maxPods`; 110 by default).
    pub max_pods: u32,
}

impl NodeSpec {
    /// A CPU node like an m5.large: 2 CPUs, 8 GiB, no taints.
    pub fn cpu(name: &str) -> Self {
        NodeSpec {
            name: name.into(),
            labels: BTreeMap::from([(
                "node.kubernetes.io/instance-type".to_string(),
                "m5.large".to_string(),
            )]),
            taints: Vec::new(),
            cpu: "2".into(),
            memory: "8Gi".into(),
            gpus: 0,
            zone: "us-west-2a".into(),
            allocatable: None,
            max_pods: 110,
        }
    }

    /// A GPU node like a g4dn.xlarge in a gpulab node group: 4 CPUs, 16 GiB, 1 GPU, labelled
    /// `nvidia.com/gpu.present=true` and tainted `nvidia.com/gpu=true:NoSchedule`.
    pub fn gpu(name: &str) -> Self {
        NodeSpec {
            name: name.into(),
            labels: BTreeMap::from([
                (
                    "node.kubernetes.io/instance-type".to_string(),
                    "g4dn.xlarge".to_string(),
                ),
                (GPU_NODE_LABEL.0.to_string(), GPU_NODE_LABEL.1.to_string()),
            ]),
            taints: vec![Taint {
                key: GPU_TAINT.0.into(),
                value: GPU_TAINT.1.into(),
                effect: GPU_TAINT.2.into(),
            }],
            cpu: "4".into(),
            memory: "16Gi".into(),
            gpus: 1,
            zone: "us-west-2a".into(),
            allocatable: None,
            max_pods: 110,
        }
    }

    /// With this many GPUs.
    pub fn with_gpus(mut self, gpus: u64) -> Self {
        self.gpus = gpus;
        self
    }

    /// With CPU and memory capacity.
    pub fn with_capacity(mut self, cpu: &str, memory: &str) -> Self {
        self.cpu = cpu.into();
        self.memory = memory.into();
        self
    }

    /// With CPU and memory allocatable below capacity, as kubelet's reservations leave them.
    pub fn with_allocatable(mut self, cpu: &str, memory: &str) -> Self {
        self.allocatable = Some((cpu.into(), memory.into()));
        self
    }

    /// Running at most `max_pods` pods.
    pub fn with_max_pods(mut self, max_pods: u32) -> Self {
        self.max_pods = max_pods;
        self
    }

    /// With one more label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// With one more taint.
    pub fn with_taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        });
        self
    }

    /// Without taints.
    pub fn without_taints(mut self) -> Self {
        self.taints.clear();
        self
    }

    /// In availability zone `zone`.
    pub fn in_zone(mut self, zone: &str) -> Self {
        self.zone = zone.into();
        self
    }

    fn to_object(&self, index: u64) -> Value {
        let mut labels: BTreeMap<String, String> = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("topology.kubernetes.io/zone".to_string(), self.zone.clone()),
            (
                "topology.kubernetes.io/region".to_string(),
                self.zone
                    .trim_end_matches(|c: char| c.is_ascii_lowercase())
                    .to_string(),
            ),
        ]);
        labels.extend(self.labels.clone());
        let taints: Vec<Value> = self
            .taints
            .iter()
            .map(|t| {
                let mut v = json!({"key": t.key, "effect": t.effect});
                if !t.value.is_empty() {
                    v["value"] = json!(t.value);
                }
                v
            })
            .collect();
        let resources = json!({
            "cpu": self.cpu, "memory": self.memory, "pods": self.max_pods.to_string(),
            "ephemeral-storage": "104845292Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
        });
        let mut allocatable = resources.clone();
        if let Some((cpu, memory)) = &self.allocatable {
            allocatable["cpu"] = json!(cpu);
            allocatable["memory"] = json!(memory);
        }
        let t = now();
        let cond = |ty: &str, status: &str, reason: &str, message: &str| {
            json!({"type": ty, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": t})
        };
        let ip = format!("192.168.{}.{}", 10 + index / 250, 10 + index % 250);
        let mut spec =
            json!({"providerID": format!("aws:///{}/i-{:017x}", self.zone, 0x0abc_0000 + index)});
        if !taints.is_empty() {
            spec["taints"] = Value::Array(taints);
        }
        json!({
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
            "status": {
                "capacity": resources,
                "allocatable": allocatable,
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "nodeInfo": {
                    "architecture": "amd64", "operatingSystem": "linux",
                    "osImage": "Amazon Linux 2023.7.20250414", "kernelVersion": "6.1.132-147.221.amzn2023.x86_64",
                    "containerRuntimeVersion": "containerd://1.7.27", "kubeletVersion": "v1.33.0-eks-gpulab",
                    "kubeProxyVersion": "", "machineID": format!("{:032x}", index + 1),
                    "systemUUID": format!("ec2{:029x}", index + 1), "bootID": format!("{:032x}", index + 7),
                },
            },
        })
    }
}

/// A running emulator. Dropping it stops the server (open connections end too).
pub struct KubeEmulator {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    nodes_added: Arc<AtomicU64>,
    _sandbox: tempfile::TempDir,
}

/// A handle on a running emulator's cluster for what the cloud around it does (a node group adds and
/// removes nodes, an EKS addon installs its workloads), usable from plain threads. It does not keep
/// the server alive.
#[derive(Clone)]
pub struct KubeHandle {
    inner: Arc<Inner>,
    nodes_added: Arc<AtomicU64>,
}

/// The cloud behind LoadBalancer Services: what the cloud provider's service controller does for
/// them (for EKS, an NLB per Service; see `crate::load_balancers`).
pub trait LoadBalancerCloud: Send + Sync {
    /// Make (or find) the load balancer of `service` and return its DNS name.
    fn ensure(&self, service: &Value) -> String;
    /// Delete the load balancer of `service`, if there is one.
    fn delete(&self, service: &Value);
}

impl KubeHandle {
    /// From now on, LoadBalancer Services get their load balancers from `cloud` (made when the Service
    /// is, deleted before the Service goes, through the service controller's finalizer).
    pub fn set_load_balancers(&self, cloud: Arc<dyn LoadBalancerCloud>) {
        let mut st = self.inner.lock();
        st.load_balancers = Some(cloud);
        sim::reconcile(&mut st);
    }

    /// From now on behave as an EKS cluster does: names resolve only while a CoreDNS pod is ready (a pod
    /// with a readiness probe that needs them stays unready without), EBS volumes are made only by a
    /// running EBS CSI controller that has AWS credentials, and each volume is pinned to the zone of the
    /// node that first used it. See [`crate::eks_world`] for the workloads EKS brings.
    pub fn behave_as_eks(&self) {
        let mut st = self.inner.lock();
        st.eks = true;
        sim::reconcile(&mut st);
    }

    /// Add a node (its GPUs appear in allocatable once the device plugin runs on it).
    pub fn add_node(&self, node: NodeSpec) {
        let index = self.nodes_added.fetch_add(1, Ordering::SeqCst);
        let mut st = self.inner.lock();
        st.node_gpus.insert(node.name.clone(), node.gpus);
        if let Err(e) = server::create(&mut st, resources::NODE, None, node.to_object(index), false)
        {
            panic!("add node {}: {}", node.name, e.message);
        }
        sim::reconcile(&mut st);
    }

    /// Remove a node; the pod garbage collector deletes its pods, and their controllers make new
    /// ones elsewhere.
    pub fn remove_node(&self, name: &str) {
        let mut st = self.inner.lock();
        st.node_gpus.remove(name);
        st.remove(resources::NODE, "", name);
        sim::reconcile(&mut st);
    }

    /// Start draining node `name`, as `kubectl drain --ignore-daemonsets` and EKS (on a spot rebalance
    /// recommendation, a node group's scale-down or update) do: cordon it (`spec.unschedulable` and the
    /// `node.kubernetes.io/unschedulable:NoSchedule` taint) and evict every pod on it that no DaemonSet
    /// owns. Eviction is a graceful deletion: a pod run for real gets its preStop hook and grace period
    /// (see [`KubeEmulator::run_containers`]); the others go at once. See [`Self::pods_on`] for what is
    /// left.
    pub fn drain_node(&self, name: &str) {
        let mut st = self.inner.lock();
        let Some(mut node) = st.get(resources::NODE, "", name).cloned() else {
            return;
        };
        node["spec"]["unschedulable"] = json!(true);
        let taint = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
        let taints = node["spec"]
            .as_object_mut()
            .expect("node spec")
            .entry("taints")
            .or_insert(json!([]));
        if let Some(list) = taints.as_array_mut()
            && !list.iter().any(|t| t["key"] == taint["key"])
        {
            list.push(taint);
        }
        st.update(resources::NODE, node);
        for (ns, pod) in evictable(&st, name) {
            sim::delete_pod(&mut st, &ns, &pod, None);
        }
        sim::reconcile(&mut st);
    }

    /// The pods (namespace, name) on node `name` that a drain evicts: all but DaemonSets'.
    pub fn pods_on(&self, name: &str) -> Vec<(String, String)> {
        evictable(&self.inner.lock(), name)
    }

    /// The names of the nodes that carry label `key=value`.
    pub fn nodes_labelled(&self, key: &str, value: &str) -> Vec<String> {
        let st = self.inner.lock();
        st.list(resources::NODE, None)
            .iter()
            .filter(|n| n["metadata"]["labels"][key] == json!(value))
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Create an object (an addon's Deployment, a system DaemonSet) as the cloud's own controllers
    /// would, if no object of its kind and name exists; `plural` names the kind (`deployments`).
    pub fn create(&self, plural: &str, object: Value) {
        let res = resources::by_plural(plural).unwrap_or_else(|| panic!("no kind {plural}"));
        let mut st = self.inner.lock();
        let ns = object["metadata"]["namespace"].as_str().map(str::to_string);
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if st.get(res, ns.as_deref().unwrap_or(""), name).is_some() {
            return;
        }
        if let Err(e) = server::create(&mut st, res, ns.as_deref(), object, false) {
            panic!("create {plural}: {}", e.message);
        }
        sim::reconcile(&mut st);
    }

    /// Set (or, with `None`, remove) annotation `key` of an object, if it exists.
    pub fn annotate(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) {
        let res = resources::by_plural(plural).unwrap_or_else(|| panic!("no kind {plural}"));
        let mut st = self.inner.lock();
        let Some(mut object) = st.get(res, namespace, name).cloned() else {
            return;
        };
        let current = object["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string);
        if current.as_deref() == value {
            return;
        }
        match value {
            Some(v) => object["metadata"]["annotations"][key] = json!(v),
            None => {
                if let Some(map) = object["metadata"]["annotations"].as_object_mut() {
                    map.remove(key);
                }
            }
        }
        st.update(res, object);
        sim::reconcile(&mut st);
    }

    /// Delete an object if it exists.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let res = resources::by_plural(plural).unwrap_or_else(|| panic!("no kind {plural}"));
        let mut st = self.inner.lock();
        st.remove(res, namespace, name);
        sim::reconcile(&mut st);
    }
}

/// The pods on node `node` that no DaemonSet owns.
fn evictable(st: &State, node: &str) -> Vec<(String, String)> {
    st.list(resources::POD, None)
        .iter()
        .filter(|p| p["spec"]["nodeName"] == json!(node))
        .filter(|p| {
            !p["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["kind"] == "DaemonSet")
        })
        .filter_map(|p| {
            let meta = &p["metadata"];
            Some((
                meta["namespace"].as_str()?.to_string(),
                meta["name"].as_str()?.to_string(),
            ))
        })
        .collect()
}

impl std::fmt::Debug for KubeEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEmulator")
            .field("url", &self.url())
            .finish()
    }
}

const CLUSTER: &str = "gpulab-emulator";

impl KubeEmulator {
    /// Start an emulator on `127.0.0.1` (a free port), with the namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`, the `kubernetes` service, and a default `gp2` storage class,
    /// and no nodes. Must be called inside a Tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("address")).await
    }

    /// Start an emulator listening on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sandbox = tempfile::Builder::new()
            .prefix("gpulab-kube-emulator-")
            .tempdir()?;
        let (close_watches, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            latency: Mutex::new(Duration::ZERO),
            fail_next: AtomicU64::new(0),
            close_watches,
            bookmark_interval: Mutex::new(Duration::from_secs(5)),
            sandbox: sandbox.path().to_path_buf(),
            addr,
        });
        {
            let mut st = inner.lock();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                server::create(
                    &mut st,
                    resources::NAMESPACE,
                    None,
                    json!({"metadata": {"name": ns}}),
                    false,
                )
                .expect("namespace");
                server::create(
                    &mut st,
                    resources::SERVICE_ACCOUNT,
                    Some(ns),
                    json!({"metadata": {"name": "default"}}),
                    false,
                )
                .expect("service account");
            }
            server::create(
                &mut st,
                resources::SERVICE,
                Some("default"),
                json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": "10.100.0.1", "clusterIPs": ["10.100.0.1"],
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]}}),
                false,
            )
            .expect("kubernetes service");
            server::create(
                &mut st,
                resources::STORAGE_CLASS,
                None,
                json!({"metadata": {"name": "gp2", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                    "provisioner": "kubernetes.io/aws-ebs", "parameters": {"type": "gp2", "fsType": "ext4"},
                    "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true}),
                false,
            )
            .expect("storage class");
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let serve_inner = inner.clone();
        tokio::spawn(async move {
            let mut stop = shutdown_rx.clone();
            loop {
                let (stream, _) = tokio::select! {
                    conn = listener.accept() => match conn {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                // Go's connections, the API server's among them, send small writes at once
                // (`net.TCPConn.SetNoDelay`: "The default is true").
                let _ = stream.set_nodelay(true);
                let inner = serve_inner.clone();
                let mut stop = shutdown_rx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| server::handle(inner.clone(), req));
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Ok(KubeEmulator {
            inner,
            shutdown,
            nodes_added: Arc::new(AtomicU64::new(0)),
            _sandbox: sandbox,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The server URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A kubeconfig (context `gpulab-emulator`, namespace `default`) for kubectl or kube-rs.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {CLUSTER}\n  cluster:\n    server: {url}\ncontexts:\n- name: {CLUSTER}\n  context:\n    cluster: {CLUSTER}\n    user: {CLUSTER}\n    namespace: default\ncurrent-context: {CLUSTER}\npreferences: {{}}\nusers:\n- name: {CLUSTER}\n  user:\n    token: gpulab-emulator-accepts-any-token\n",
            url = self.url()
        )
    }

    /// Write [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A kube-rs client for this server (default namespace `default`).
    pub fn client(&self) -> ::kube::Client {
        let url = self.url().parse().expect("emulator URL");
        ::kube::Client::try_from(::kube::Config::new(url)).expect("kube client for the emulator")
    }

    /// A handle for what the cloud around the cluster does, usable from plain threads.
    pub fn handle(&self) -> KubeHandle {
        KubeHandle {
            inner: self.inner.clone(),
            nodes_added: self.nodes_added.clone(),
        }
    }

    /// Add a node (its GPUs appear in allocatable once the device plugin runs on it).
    pub fn add_node(&self, node: NodeSpec) {
        self.handle().add_node(node);
    }

    /// Remove a node; the pod garbage collector deletes its pods, and their controllers make new
    /// ones elsewhere.
    pub fn remove_node(&self, name: &str) {
        self.handle().remove_node(name);
    }

    /// Drain node `name` ([`KubeHandle::drain_node`]) and wait until its evicted pods are gone, at most
    /// `timeout`; returns the pods still there then (none when the drain finished).
    pub async fn drain_node(&self, name: &str, timeout: Duration) -> Vec<(String, String)> {
        let handle = self.handle();
        handle.drain_node(name);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = handle.pods_on(name);
            if left.is_empty() || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Make port-forwards to `port` of pod `namespace/pod` connect to `to` (a real server the test runs).
    pub fn register_port(&self, namespace: &str, pod: &str, port: u16, to: SocketAddr) {
        self.inner
            .lock()
            .ports
            .insert((namespace.into(), pod.into(), port), to);
    }

    /// What `pods/log` returns for the pod.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, text: &str) {
        self.inner
            .lock()
            .logs
            .insert((namespace.into(), pod.into()), text.into());
    }

    /// Make pulls of images whose name contains `substring` fail (pods stay in `ImagePullBackOff`).
    pub fn fail_image_pulls(&self, substring: &str) {
        self.inner.lock().unpullable.push(substring.into());
    }

    /// Let images pull again; stuck pods start.
    pub fn allow_image_pulls(&self) {
        let mut st = self.inner.lock();
        st.unpullable.clear();
        sim::reconcile(&mut st);
    }

    /// Delay every request by `latency` before it is served, and make it the round trip of every exec
    /// and port-forward stream opened afterwards (see `delay`): half of it each way, data flowing at full
    /// speed up to a window.
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// Answer the next `n` requests with `500 InternalError`.
    pub fn fail_next(&self, n: u64) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// End every open watch (clients see the stream close and must watch again).
    pub fn close_watches(&self) {
        self.inner.close_watches.send_modify(|g| *g += 1);
    }

    /// How often watches with `allowWatchBookmarks` get a `BOOKMARK` (default 5 s; applies to watches
    /// started afterwards).
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self
            .inner
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = every.max(Duration::from_millis(1));
    }

    /// Run the containers of pods with an image containing `image_contains` for real, from `rootfs`
    /// (see [`crate::rootfs`]): the kubelet starts the pod's command in a fresh copy of the root, its
    /// claims bound from host folders that outlive the pod ([`Self::volume_dir`]), its secrets and
    /// config maps projected with their modes; the pod is ready when its TCP readiness probe connects;
    /// exec and port-forward enter the container. Call once, before such pods are scheduled.
    pub fn run_containers(&self, image_contains: &str, rootfs: crate::rootfs::RootFs) {
        self.inner.lock().real = Some(store::RealMode {
            image_contains: image_contains.into(),
        });
        containers::spawn_runtime(self.inner.clone(), rootfs);
    }

    /// The host folder behind the PersistentVolume a claim is bound to, in the real-container mode.
    pub fn volume_dir(&self, namespace: &str, claim: &str) -> Option<PathBuf> {
        let volume = self.object("persistentvolumeclaims", namespace, claim)?["spec"]["volumeName"]
            .as_str()?
            .to_string();
        Some(self.inner.sandbox.join("volumes").join(volume))
    }

    /// What `pods/log` returns for the pod now (a real container's output, or what the test set).
    pub fn pod_log(&self, namespace: &str, pod: &str) -> Option<String> {
        self.inner
            .lock()
            .logs
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
    }

    /// Every object of kind `plural` in `namespace` (all namespaces when empty), as JSON.
    pub fn objects(&self, plural: &str, namespace: &str) -> Vec<Value> {
        let res = resources::by_plural(plural).unwrap_or_else(|| panic!("no kind {plural}"));
        let st = self.inner.lock();
        st.list(res, (!namespace.is_empty()).then_some(namespace))
    }

    /// The sandbox directory where commands exec'd in the pod run (created on first exec).
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        stream::pod_dir(&self.inner.sandbox, namespace, pod)
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// A stored object as JSON, by REST name (`pods`, `daemonsets`, ...), namespace ("" for cluster
    /// scoped kinds) and name.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resources::RESOURCES
            .iter()
            .position(|r| r.plural == plural)?;
        self.inner.lock().get(res, namespace, name).cloned()
    }

    /// The GPUs a node currently advertises as allocatable (`None` before the device plugin ran).
    pub fn allocatable_gpus(&self, node: &str) -> Option<u64> {
        self.object("nodes", "", node)?["status"]["allocatable"][GPU_RESOURCE]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.close_watches();
    }
}
