//! The object store: objects as JSON keyed by kind, namespace and name, one resourceVersion counter,
//! and the event log that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::{RESOURCES, ResourceDef};

/// (resource index, namespace or "", name).
pub(crate) type Key = (usize, String, String);

/// A change, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) res: usize,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub(crate) kind: &'static str,
    pub(crate) object: Value,
    /// The object before a modification.
    pub(crate) prev: Option<Value>,
}

/// How many changes are kept for watches that resume from a resourceVersion.
const LOG_LEN: usize = 20_000;

/// An API error, rendered as a `metav1.Status`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, def: &ResourceDef, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": def.plural});
        if !def.group.is_empty() {
            d["group"] = json!(def.group);
        }
        self.details = Some(d);
        self
    }

    pub(crate) fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", def.qualified()),
        )
        .with_details(def, name)
    }

    pub(crate) fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified()),
        )
        .with_details(def, name)
    }

    pub(crate) fn conflict(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                def.qualified()
            ),
        )
        .with_details(def, name)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn invalid(def: &ResourceDef, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {}", def.kind, message.into()),
        )
        .with_details(def, name)
    }

    /// The `metav1.Status` body.
    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Everything behind the emulator's lock.
pub(crate) struct State {
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) rv: u64,
    log: VecDeque<Arc<Change>>,
    /// Changes after this resourceVersion are all in the log.
    pub(crate) log_floor: u64,
    pub(crate) tx: broadcast::Sender<Arc<Change>>,
    seed: RandomState,
    counter: u64,
    /// GPUs each simulated node has (advertised only once the device plugin runs there).
    pub(crate) node_gpus: BTreeMap<String, u64>,
    /// Time-slicing replicas each running device plugin pod (by uid) read at start.
    pub(crate) plugin_replicas: HashMap<String, u64>,
    /// Where port-forwards to (namespace, pod, port) connect.
    pub(crate) ports: HashMap<(String, String, u16), SocketAddr>,
    /// Logs the test set for (namespace, pod).
    pub(crate) logs: HashMap<(String, String), String>,
    /// The last configuration each field manager applied to an object.
    pub(crate) applied: HashMap<(Key, String), Value>,
    /// Image substrings whose pulls fail.
    pub(crate) unpullable: Vec<String>,
    /// Which pods run their container for real (`None`: none do).
    pub(crate) real: Option<RealMode>,
    /// Real pods the kubelet queued for the runtime: (namespace, name, uid).
    pub(crate) to_start: Vec<(String, String, String)>,
    /// The running real containers, by (namespace, pod).
    pub(crate) sandboxes: HashMap<(String, String), Sandbox>,
    /// Whether the cluster behaves as EKS does (see `KubeHandle::behave_as_eks`): cluster DNS from
    /// CoreDNS pods, EBS volumes only through a credentialed EBS CSI controller, zonal volumes.
    pub(crate) eks: bool,
    /// The cloud behind LoadBalancer Services, when a test plays one (see
    /// `KubeHandle::set_load_balancers`).
    pub(crate) load_balancers: Option<Arc<dyn super::LoadBalancerCloud>>,
}

/// The current time as a Kubernetes timestamp.
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl State {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        State {
            objects: BTreeMap::new(),
            rv: 1,
            log: VecDeque::new(),
            log_floor: 1,
            tx,
            seed: RandomState::new(),
            counter: 0,
            node_gpus: BTreeMap::new(),
            plugin_replicas: HashMap::new(),
            ports: HashMap::new(),
            logs: HashMap::new(),
            applied: HashMap::new(),
            unpullable: Vec::new(),
            real: None,
            to_start: Vec::new(),
            sandboxes: HashMap::new(),
            eks: false,
            load_balancers: None,
        }
    }

    /// A fresh random number.
    pub(crate) fn random(&mut self) -> u64 {
        self.counter += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }

    /// A random RFC 4122-shaped uid.
    pub(crate) fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// `n` random lowercase alphanumerics, as `generateName` appends (without vowels, as the real server).
    pub(crate) fn suffix(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        (0..n)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    pub(crate) fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_string(), name.to_string()))
    }

    /// All objects of a kind (in a namespace, if given), in name order.
    pub(crate) fn list(&self, res: usize, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .range((res, String::new(), String::new())..(res + 1, String::new(), String::new()))
            .filter(|((_, n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn emit(&mut self, res: usize, kind: &'static str, object: Value, prev: Option<Value>) {
        let change = Arc::new(Change {
            rv: self.rv,
            res,
            kind,
            object,
            prev,
        });
        self.log.push_back(change.clone());
        while self.log.len() > LOG_LEN {
            if let Some(c) = self.log.pop_front() {
                self.log_floor = c.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    /// The logged changes after `rv`, or `None` if some are no longer kept.
    pub(crate) fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        (rv >= self.log_floor).then(|| self.log.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    /// Store a new object (metadata filled in: uid, resourceVersion, creationTimestamp, generation).
    pub(crate) fn insert(&mut self, res: usize, mut obj: Value) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = (res, ns, name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(def, &name));
        }
        self.rv += 1;
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        let uid = self.uid();
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("deletionTimestamp");
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        self.objects.insert(key, obj.clone());
        self.emit(res, "ADDED", obj.clone(), None);
        Ok(obj)
    }

    /// Replace a stored object (same key); bumps resourceVersion and generation (when `spec` changed),
    /// unless nothing changed.
    pub(crate) fn update(&mut self, res: usize, mut obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = (res, ns, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return obj;
        };
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        obj["metadata"]["generation"] = old["metadata"]["generation"].clone();
        if obj["metadata"]["generation"].is_null() {
            obj["metadata"]
                .as_object_mut()
                .expect("object")
                .remove("generation");
        }
        if obj == old {
            return old;
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj.get("spec") != old.get("spec")
            && let Some(g) = old["metadata"]["generation"].as_i64()
        {
            obj["metadata"]["generation"] = json!(g + 1);
        }
        // An object being deleted goes once its last finalizer is removed (Kubernetes API concepts,
        // "Finalizers").
        // A pod in its grace period is the exception: its kubelet removes it once stopped.
        let graceful_pod = res == super::resources::POD
            && obj["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_some_and(|g| g > 0);
        let finalized = obj["metadata"].get("deletionTimestamp").is_some()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && !graceful_pod;
        self.objects.insert(key.clone(), obj.clone());
        self.emit(res, "MODIFIED", obj.clone(), Some(old));
        if finalized {
            return self.remove(res, &key.1, &key.2).unwrap_or(obj);
        }
        obj
    }

    /// Remove an object; returns it as last seen (with the deletion's resourceVersion).
    pub(crate) fn remove(&mut self, res: usize, ns: &str, name: &str) -> Option<Value> {
        let key = (res, ns.to_string(), name.to_string());
        let mut obj = self.objects.remove(&key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.applied.retain(|(k, _), _| *k != key);
        if res == super::resources::POD
            && let Some(uid) = obj["metadata"]["uid"].as_str()
        {
            self.plugin_replicas.remove(uid);
        }
        self.emit(res, "DELETED", obj.clone(), None);
        Some(obj)
    }
}

/// What the API server needs of a running real container: its namespaces (by a process in them) and
/// the environment and working directory exec'd commands get.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    /// The pod's uid.
    pub(crate) uid: String,
    /// A process in the container's namespaces.
    pub(crate) pid: u32,
    /// The container's environment.
    pub(crate) env: Vec<(String, String)>,
    /// Its working directory.
    pub(crate) working_dir: String,
}

/// The real mode's settings.
#[derive(Debug, Clone)]
pub(crate) struct RealMode {
    /// Pods with a container whose image contains this run for real.
    pub(crate) image_contains: String,
}

impl RealMode {
    /// Whether `pod` runs for real.
    pub(crate) fn wants(&self, pod: &Value) -> bool {
        pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["image"]
                    .as_str()
                    .is_some_and(|i| i.contains(&self.image_contains))
            })
    }
}
