//! moto in server mode on loopback, for tests of the AWS provisioner, and [`EksGaps`]: the EKS calls
//! moto does not implement (access entries, addons), answered by the [`crate::fault_proxy`] in front.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::fault_proxy::{Intercept, ProxyRequest, ProxyResponse};

/// A running `moto_server`; killed when dropped.
pub struct MotoServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where `moto_server` is: `GPULAB_MOTO_SERVER`, else the repository's `.venv/bin/moto_server`, else
/// `PATH`.
pub fn find_moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GPULAB_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = repo.join(".venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// One HTTP/1.1 request with `Connection: close`; the status code and body.
fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

/// A Query-protocol call (EC2, IAM, STS) straight to moto, unsigned but for the credential scope moto
/// routes by: for the emulated world's own bookkeeping (a node group's zones), not for gpulab.
pub fn query(addr: SocketAddr, service: &str, params: &[(&str, &str)]) -> std::io::Result<String> {
    let body: String = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-west-2/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string())
}

/// The availability zone of each of `subnets`, from moto's EC2.
pub fn subnet_zones(addr: SocketAddr, subnets: &[String]) -> BTreeMap<String, String> {
    let mut params = vec![("Action", "DescribeSubnets"), ("Version", "2016-11-15")];
    let keys: Vec<String> = (1..=subnets.len())
        .map(|i| format!("SubnetId.{i}"))
        .collect();
    for (k, v) in keys.iter().zip(subnets) {
        params.push((k, v));
    }
    let xml = query(addr, "ec2", &params).unwrap_or_default();
    let mut zones = BTreeMap::new();
    for item in xml.split("<item>").skip(1) {
        let field = |tag: &str| {
            item.split_once(&format!("<{tag}>"))
                .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
                .map(|(v, _)| v.to_string())
        };
        if let (Some(id), Some(zone)) = (field("subnetId"), field("availabilityZone")) {
            zones.insert(id, zone);
        }
    }
    zones
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl MotoServer {
    /// Start moto on a free loopback port (with AWS-managed IAM policies loaded) and wait until it
    /// answers. Panics, saying how to install moto, when it cannot be found.
    pub fn start() -> Self {
        match Self::try_start() {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`MotoServer::start`], returning what went wrong instead of panicking.
    pub fn try_start() -> Result<Self, String> {
        let bin = find_moto_server().ok_or_else(|| {
            "moto_server not found: run scripts/test (it installs moto[server] into .venv), or set GPULAB_MOTO_SERVER".to_string()
        })?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .env("AWS_DEFAULT_REGION", "us-west-2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                format!(
                    "start {}: {e}; run scripts/test (it installs moto[server] into .venv)",
                    bin.display()
                )
            })?;
        let mut server = MotoServer {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, _)) = http(addr, "GET", "/moto-api/")
                && status > 0
            {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "moto_server exited with {status}: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err("moto_server did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, for an SDK endpoint override.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forget every resource (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let (status, body) = http(self.addr, "POST", "/moto-api/reset").expect("reset moto");
        assert_eq!(status, 200, "moto reset: {body}");
    }

    /// moto's log so far (one line per request), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An access entry: its associated policies and its tags.
#[derive(Default)]
struct AccessEntry {
    policies: BTreeSet<String>,
    tags: Value,
    kind: &'static str,
}

/// A Pod Identity association.
#[derive(Clone)]
struct Association {
    namespace: String,
    service_account: String,
    role_arn: String,
    tags: Value,
    /// The addon that made it, if one did (its associations go with it).
    owner: Option<String>,
}

#[derive(Default)]
struct ClusterExtras {
    access_entries: BTreeMap<String, AccessEntry>,
    /// Addons by name, with their tags.
    addons: BTreeMap<String, Value>,
    /// Pod Identity associations by ID.
    associations: BTreeMap<String, Association>,
}

/// The principal moto's GetCallerIdentity answers with for any credentials (moto's default account).
pub const MOTO_CALLER: &str = "arn:aws:sts::123456789012:user/moto";

/// The EKS operations moto lacks, kept in memory: access entries (create, describe, list, delete,
/// associate policy), addons (create, describe, list, update, delete) and Pod Identity associations
/// (create, describe, list, delete; an addon's own made with it and gone with it), each with its tags
/// as EKS keeps them. As EKS does, a cluster created with `bootstrapClusterCreatorAdminPermissions` (the default)
/// gets an access entry for its creator, with the cluster admin policy and no tags (EKS API reference,
/// CreateAccessConfigRequest; the creator here is [`MOTO_CALLER`]). Deleting a cluster (forwarded to
/// moto) forgets its extras.
#[derive(Default)]
pub struct EksGaps {
    clusters: Mutex<BTreeMap<String, ClusterExtras>>,
    /// moto, to check the IAM roles access entries name (see [`EksGaps::checking_principals_in`]).
    iam: Option<SocketAddr>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl EksGaps {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that refuses an access entry for an IAM role ARN that is not exactly the ARN of
    /// a role in moto at `moto`, path included, as EKS does: the pathless ARN an IAM Identity Center
    /// session's ARN suggests (`…:role/AWSReservedSSO_…` for a role at
    /// `/aws-reserved/sso.amazonaws.com/…`) is refused (aws/containers-roadmap#474).
    pub fn checking_principals_in(moto: SocketAddr) -> Self {
        EksGaps {
            iam: Some(moto),
            ..Self::default()
        }
    }

    /// Why EKS would refuse `principal` for an access entry, if it would.
    fn principal_problem(&self, principal: &str) -> Option<String> {
        let moto = self.iam?;
        let role = principal.split(":role/").nth(1)?;
        let name = role.rsplit('/').next()?;
        let xml = query(
            moto,
            "iam",
            &[
                ("Action", "GetRole"),
                ("Version", "2010-05-08"),
                ("RoleName", name),
            ],
        )
        .ok()?;
        let arn = xml
            .split_once("<Arn>")
            .and_then(|(_, rest)| rest.split_once("</Arn>"))
            .map(|(arn, _)| arn.to_string());
        (arn.as_deref() != Some(principal))
            .then(|| format!("The specified principalArn is invalid: {principal} is not an existing IAM role's ARN"))
    }

    /// The role a Pod Identity association gives `namespace/service_account` in `cluster`, if any.
    pub fn pod_identity_role(
        &self,
        cluster: &str,
        namespace: &str,
        service_account: &str,
    ) -> Option<String> {
        let clusters = self.clusters.lock().expect("eks gaps lock");
        clusters.get(cluster)?.associations.values().find_map(|a| {
            (a.namespace == namespace && a.service_account == service_account)
                .then(|| a.role_arn.clone())
        })
    }

    fn association(cluster: &str, id: &str, a: &Association) -> Value {
        let mut v = json!({
            "clusterName": cluster,
            "namespace": a.namespace,
            "serviceAccount": a.service_account,
            "roleArn": a.role_arn,
            "associationArn": format!("arn:aws:eks:us-west-2:123456789012:podidentityassociation/{cluster}/{id}"),
            "associationId": id,
            "tags": a.tags,
            "createdAt": now(),
            "modifiedAt": now(),
        });
        if let Some(owner) = &a.owner {
            v["ownerArn"] = json!(format!(
                "arn:aws:eks:us-west-2:123456789012:addon/{cluster}/{owner}/0"
            ));
        }
        v
    }

    /// Record an addon's Pod Identity associations (`podIdentityAssociations` of CreateAddon or
    /// UpdateAddon), replacing those it had.
    fn set_addon_associations(extras: &mut ClusterExtras, addon: &str, body: &Value) {
        extras
            .associations
            .retain(|_, a| a.owner.as_deref() != Some(addon));
        for a in body["podIdentityAssociations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = format!(
                "a-{:016x}",
                extras.associations.len() as u64 + 1 + (now() as u64)
            );
            extras.associations.insert(
                id,
                Association {
                    namespace: "kube-system".into(),
                    service_account: a["serviceAccount"].as_str().unwrap_or_default().into(),
                    role_arn: a["roleArn"].as_str().unwrap_or_default().into(),
                    tags: json!({}),
                    owner: Some(addon.to_string()),
                },
            );
        }
    }

    /// How many access entries and addons a cluster has here.
    pub fn counts(&self, cluster: &str) -> (usize, usize) {
        let clusters = self.clusters.lock().expect("eks gaps lock");
        clusters
            .get(cluster)
            .map(|c| (c.access_entries.len(), c.addons.len()))
            .unwrap_or((0, 0))
    }

    fn addon(
        cluster: &str,
        name: &str,
        status: &str,
        tags: &Value,
        associations: Vec<String>,
    ) -> Value {
        json!({"addon": {
            "podIdentityAssociations": associations,
            "addonName": name,
            "clusterName": cluster,
            "status": status,
            "addonVersion": "v1.40.0-eksbuild.1",
            "addonArn": format!("arn:aws:eks:us-west-2:123456789012:addon/{cluster}/{name}/0"),
            "createdAt": now(),
            "modifiedAt": now(),
            "tags": tags,
        }})
    }

    /// The ARNs of the associations addon `name` made.
    fn owned_by(extras: &ClusterExtras, cluster: &str, name: &str) -> Vec<String> {
        extras
            .associations
            .iter()
            .filter(|(_, a)| a.owner.as_deref() == Some(name))
            .map(|(id, _)| {
                format!("arn:aws:eks:us-west-2:123456789012:podidentityassociation/{cluster}/{id}")
            })
            .collect()
    }

    fn access_entry(cluster: &str, principal: &str, entry: &AccessEntry) -> Value {
        json!({"accessEntry": {
            "clusterName": cluster,
            "principalArn": principal,
            "kubernetesGroups": [],
            "accessEntryArn": format!("arn:aws:eks:us-west-2:123456789012:access-entry/{cluster}/0"),
            "createdAt": now(),
            "modifiedAt": now(),
            "tags": entry.tags,
            "username": principal,
            "type": entry.kind,
        }})
    }

    /// Add an access entry to `cluster` as another tool would (tests of what gpulab leaves alone).
    pub fn add_foreign_access_entry(&self, cluster: &str, principal: &str) {
        let mut clusters = self.clusters.lock().expect("eks gaps lock");
        clusters
            .entry(cluster.to_string())
            .or_default()
            .access_entries
            .insert(
                principal.to_string(),
                AccessEntry {
                    kind: "STANDARD",
                    tags: json!({"team": "platform"}),
                    ..Default::default()
                },
            );
    }

    /// Add an addon to `cluster` as another tool would.
    pub fn add_foreign_addon(&self, cluster: &str, name: &str) {
        let mut clusters = self.clusters.lock().expect("eks gaps lock");
        clusters
            .entry(cluster.to_string())
            .or_default()
            .addons
            .insert(name.to_string(), json!({"team": "platform"}));
    }

    /// The principals with an access entry in `cluster`, and the addons it has.
    pub fn contents(&self, cluster: &str) -> (Vec<String>, Vec<String>) {
        let clusters = self.clusters.lock().expect("eks gaps lock");
        clusters
            .get(cluster)
            .map(|c| {
                (
                    c.access_entries.keys().cloned().collect(),
                    c.addons.keys().cloned().collect(),
                )
            })
            .unwrap_or_default()
    }
}

impl Intercept for EksGaps {
    fn handle(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        if req.service != "eks" {
            return None;
        }
        let parts: Vec<String> = req
            .path
            .trim_start_matches('/')
            .split('/')
            .map(decode)
            .collect();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut clusters = self.clusters.lock().expect("eks gaps lock");
        let not_found =
            |what: &str| ProxyResponse::rest_error(404, "ResourceNotFoundException", what);
        let in_use = |what: &str| ProxyResponse::rest_error(409, "ResourceInUseException", what);
        match (req.method.as_str(), p.as_slice()) {
            ("DELETE", ["clusters", c]) => {
                clusters.remove(*c);
                None
            }
            // CreateCluster goes on to moto; the creator's admin entry is EKS's doing.
            ("POST", ["clusters"]) => {
                let name = body["name"].as_str().unwrap_or_default().to_string();
                let bootstrap = body["accessConfig"]["bootstrapClusterCreatorAdminPermissions"]
                    .as_bool()
                    .unwrap_or(true);
                if bootstrap && !clusters.contains_key(&name) {
                    let extras = clusters.entry(name).or_default();
                    extras.access_entries.insert(
                        MOTO_CALLER.to_string(),
                        AccessEntry {
                            policies: BTreeSet::from([
                                "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
                                    .to_string(),
                            ]),
                            tags: json!({}),
                            kind: "STANDARD",
                        },
                    );
                }
                None
            }
            ("POST", ["clusters", c, "access-entries"]) => {
                let principal = body["principalArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if let Some(problem) = self.principal_problem(&principal) {
                    return Some(ProxyResponse::rest_error(
                        400,
                        "InvalidParameterException",
                        &problem,
                    ));
                }
                let extras = clusters.entry(c.to_string()).or_default();
                if extras.access_entries.contains_key(&principal) {
                    return Some(in_use(
                        "The specified access entry resource is already in use on this cluster.",
                    ));
                }
                let entry = AccessEntry {
                    tags: body["tags"].clone(),
                    kind: "STANDARD",
                    ..Default::default()
                };
                let answer = Self::access_entry(c, &principal, &entry);
                extras.access_entries.insert(principal, entry);
                Some(ProxyResponse::json(200, &answer))
            }
            ("GET", ["clusters", c, "access-entries", principal]) => Some(
                match clusters
                    .get(*c)
                    .and_then(|x| x.access_entries.get(*principal))
                {
                    Some(entry) => {
                        ProxyResponse::json(200, &Self::access_entry(c, principal, entry))
                    }
                    None => not_found("No access entry found"),
                },
            ),
            ("GET", ["clusters", c, "access-entries"]) => {
                let entries: Vec<String> = clusters
                    .get(*c)
                    .map(|x| x.access_entries.keys().cloned().collect())
                    .unwrap_or_default();
                Some(ProxyResponse::json(200, &json!({"accessEntries": entries})))
            }
            ("DELETE", ["clusters", c, "access-entries", principal]) => {
                let removed = clusters
                    .get_mut(*c)
                    .and_then(|x| x.access_entries.remove(*principal));
                Some(match removed {
                    Some(_) => ProxyResponse::json(200, &json!({})),
                    None => not_found("No access entry found"),
                })
            }
            (
                "POST",
                [
                    "clusters",
                    c,
                    "access-entries",
                    principal,
                    "access-policies",
                ],
            ) => {
                let policy = body["policyArn"].as_str().unwrap_or_default().to_string();
                let Some(entry) = clusters
                    .get_mut(*c)
                    .and_then(|x| x.access_entries.get_mut(*principal))
                else {
                    return Some(not_found("No access entry found"));
                };
                entry.policies.insert(policy.clone());
                Some(ProxyResponse::json(
                    200,
                    &json!({
                        "clusterName": c,
                        "principalArn": principal,
                        "associatedAccessPolicy": {
                            "policyArn": policy,
                            "accessScope": body["accessScope"],
                            "associatedAt": now(),
                            "modifiedAt": now(),
                        },
                    }),
                ))
            }
            ("POST", ["clusters", c, "addons"]) => {
                let name = body["addonName"].as_str().unwrap_or_default().to_string();
                let extras = clusters.entry(c.to_string()).or_default();
                if extras.addons.contains_key(&name) {
                    return Some(in_use("Addon already exists."));
                }
                let tags = body["tags"].clone();
                Self::set_addon_associations(extras, &name, &body);
                let answer = Self::addon(
                    c,
                    &name,
                    "CREATING",
                    &tags,
                    Self::owned_by(extras, c, &name),
                );
                extras.addons.insert(name, tags);
                Some(ProxyResponse::json(200, &answer))
            }
            ("POST", ["clusters", c, "addons", name, "update"]) => {
                let Some(extras) = clusters
                    .get_mut(*c)
                    .filter(|x| x.addons.contains_key(*name))
                else {
                    return Some(not_found(&format!(
                        "No addon: {name} found in cluster: {c}"
                    )));
                };
                if body.get("podIdentityAssociations").is_some() {
                    Self::set_addon_associations(extras, name, &body);
                }
                Some(ProxyResponse::json(
                    200,
                    &json!({"update": {"id": "u-1", "status": "InProgress", "type": "AddonUpdate", "createdAt": now()}}),
                ))
            }
            ("POST", ["clusters", c, "pod-identity-associations"]) => {
                let extras = clusters.entry(c.to_string()).or_default();
                let namespace = body["namespace"].as_str().unwrap_or_default().to_string();
                let account = body["serviceAccount"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if extras
                    .associations
                    .values()
                    .any(|a| a.namespace == namespace && a.service_account == account)
                {
                    return Some(in_use("Association already exists"));
                }
                let id = format!(
                    "a-{:016x}",
                    extras.associations.len() as u64 + 1 + (now() as u64)
                );
                let a = Association {
                    namespace,
                    service_account: account,
                    role_arn: body["roleArn"].as_str().unwrap_or_default().into(),
                    tags: body["tags"].clone(),
                    owner: None,
                };
                let answer = json!({"association": Self::association(c, &id, &a)});
                extras.associations.insert(id, a);
                Some(ProxyResponse::json(200, &answer))
            }
            ("GET", ["clusters", c, "pod-identity-associations"]) => {
                let query = req.query.clone().unwrap_or_default();
                let param = |key: &str| {
                    query.split('&').find_map(|kv| {
                        kv.split_once('=')
                            .filter(|(k, _)| *k == key)
                            .map(|(_, v)| decode(v))
                    })
                };
                let (namespace, account) = (param("namespace"), param("serviceAccount"));
                let list: Vec<Value> = clusters
                    .get(*c)
                    .map(|x| {
                        x.associations
                            .iter()
                            .filter(|(_, a)| namespace.as_ref().is_none_or(|n| *n == a.namespace))
                            .filter(|(_, a)| {
                                account.as_ref().is_none_or(|s| *s == a.service_account)
                            })
                            .map(|(id, a)| {
                                let mut v = Self::association(c, id, a);
                                if let Some(m) = v.as_object_mut() {
                                    m.remove("tags");
                                    m.remove("roleArn");
                                }
                                v
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(ProxyResponse::json(200, &json!({"associations": list})))
            }
            ("GET", ["clusters", c, "pod-identity-associations", id]) => Some(
                match clusters.get(*c).and_then(|x| x.associations.get(*id)) {
                    Some(a) => ProxyResponse::json(
                        200,
                        &json!({"association": Self::association(c, id, a)}),
                    ),
                    None => not_found("No pod identity association found"),
                },
            ),
            ("DELETE", ["clusters", c, "pod-identity-associations", id]) => Some(
                match clusters
                    .get_mut(*c)
                    .and_then(|x| x.associations.remove(*id))
                {
                    Some(a) => ProxyResponse::json(
                        200,
                        &json!({"association": Self::association(c, id, &a)}),
                    ),
                    None => not_found("No pod identity association found"),
                },
            ),
            ("GET", ["clusters", c, "addons"]) => {
                let addons: Vec<String> = clusters
                    .get(*c)
                    .map(|x| x.addons.keys().cloned().collect())
                    .unwrap_or_default();
                Some(ProxyResponse::json(200, &json!({"addons": addons})))
            }
            ("GET", ["clusters", c, "addons", name]) => Some(
                match clusters.get(*c).filter(|x| x.addons.contains_key(*name)) {
                    Some(x) => ProxyResponse::json(
                        200,
                        &Self::addon(
                            c,
                            name,
                            "ACTIVE",
                            &x.addons[*name],
                            Self::owned_by(x, c, name),
                        ),
                    ),
                    None => not_found(&format!("No addon: {name} found in cluster: {c}")),
                },
            ),
            ("DELETE", ["clusters", c, "addons", name]) => Some(
                match clusters
                    .get_mut(*c)
                    .filter(|x| x.addons.contains_key(*name))
                {
                    Some(x) => {
                        let tags = x.addons.remove(*name).unwrap_or_default();
                        // An addon's associations go with it.
                        x.associations
                            .retain(|_, a| a.owner.as_deref() != Some(*name));
                        ProxyResponse::json(
                            200,
                            &Self::addon(c, name, "DELETING", &tags, Vec::new()),
                        )
                    }
                    None => not_found(&format!("No addon: {name} found in cluster: {c}")),
                },
            ),
            _ => None,
        }
    }
}
