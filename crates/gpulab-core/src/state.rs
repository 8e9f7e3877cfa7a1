//! The lab's local record: what was asked for, what was created and when, the pinned SSH host key, and
//! how many nodes ran when (for the cost since `up`). It makes `up` resumable and `down` complete, and a
//! lock stops two processes from changing one lab at once.
//!
//! Each lab has a directory, `$GPULAB_HOME/labs/<name>/` (default `~/.local/share/gpulab/labs/<name>/`),
//! holding `state.json`, the `lock` file and the lab's `kubeconfig`.
//!
//! The state holds the lab's [`LabId`], the only proof that a cloud resource or cluster object is the
//! lab's own; an unreadable state is an error that says how to recover, never a reason to guess.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::naming::LabId;
use crate::provision::{ClusterBinding, Provider, ResourceRef};
use crate::spec::LabSpec;
use crate::workspace::VolumeClass;
use crate::{Error, Result};

// The state is written with it; re-exported for callers that know it from here.
pub use crate::private_files::write_private_atomically;

/// Where gpulab keeps its labs: `$GPULAB_HOME`, else the user's data directory.
pub fn gpulab_home() -> PathBuf {
    std::env::var_os("GPULAB_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("gpulab")))
        .unwrap_or_else(|| PathBuf::from(".gpulab"))
}

/// A span of time during which `nodes` GPU nodes ran (the last one is still open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpan {
    /// When the node count became `nodes`.
    pub since: SystemTime,
    /// GPU nodes running.
    pub nodes: u32,
}

/// The stages of `up`, in order, as the lab's record keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpStep {
    /// Credentials, capacity and quota checked.
    Preflight,
    /// Cloud resources created (network, IAM, cluster, node group).
    Provision,
    /// The device plugin and the workspace applied.
    Workspace,
    /// The workspace pod is ready.
    Ready,
}

/// The lab's local record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    /// The lab's identity, on everything it creates.
    pub id: LabId,
    /// The spec `up` ran with (what `down` and `status` work from).
    pub spec: LabSpec,
    /// Where the lab's cluster comes from.
    pub provider: Provider,
    /// On an existing cluster: the cluster `up` found through the kubeconfig, which later commands
    /// must find there again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterBinding>,
    /// The StorageClass `/workspace`'s claim was made with (it cannot change afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_class: Option<VolumeClass>,
    /// When `up` first started creating things.
    pub created_at: SystemTime,
    /// Steps of `up` that have completed, in order. A name gpulab does not know makes the record
    /// unreadable (never silently dropped).
    pub steps_done: Vec<UpStep>,
    /// Every cloud resource the lab owns, as far as gpulab knows.
    pub resources: Vec<ResourceRef>,
    /// The workspace's SSH host public key, pinned by every client.
    pub host_public_key: Option<String>,
    /// GPU node counts over time.
    pub node_history: Vec<NodeSpan>,
}

impl LabState {
    /// A new record for lab `id`, which `up` is about to create.
    pub fn new(id: LabId, spec: LabSpec, provider: Provider) -> Self {
        LabState {
            id,
            spec,
            provider,
            cluster: None,
            volume_class: None,
            created_at: SystemTime::now(),
            steps_done: Vec::new(),
            resources: Vec::new(),
            host_public_key: None,
            node_history: Vec::new(),
        }
    }

    /// Whether `step` completed in an earlier run.
    pub fn done(&self, step: UpStep) -> bool {
        self.steps_done.contains(&step)
    }

    /// Record that `step` completed.
    pub fn mark_done(&mut self, step: UpStep) {
        if !self.done(step) {
            self.steps_done.push(step);
        }
    }

    /// Record a resource (once).
    pub fn add_resource(&mut self, resource: ResourceRef) {
        if !self.resources.contains(&resource) {
            self.resources.push(resource);
        }
    }

    /// Record that `nodes` GPU nodes run from now on.
    pub fn set_nodes(&mut self, nodes: u32, at: SystemTime) {
        if self.node_history.last().map(|s| s.nodes) != Some(nodes) {
            self.node_history.push(NodeSpan { since: at, nodes });
        }
    }

    /// GPU node-hours from creation until `now`.
    pub fn node_hours(&self, now: SystemTime) -> f64 {
        let mut hours = 0.0;
        for (i, span) in self.node_history.iter().enumerate() {
            let end = self.node_history.get(i + 1).map_or(now, |next| next.since);
            let secs = end
                .duration_since(span.since)
                .map_or(0.0, |d| d.as_secs_f64());
            hours += f64::from(span.nodes) * secs / 3600.0;
        }
        hours
    }

    /// Hours since the lab was created.
    pub fn age_hours(&self, now: SystemTime) -> f64 {
        now.duration_since(self.created_at)
            .map_or(0.0, |d| d.as_secs_f64() / 3600.0)
    }
}

/// A lab's directory on this machine.
#[derive(Debug, Clone)]
pub struct LabDir {
    path: PathBuf,
}

/// While held, no other gpulab process changes the lab. Released on drop.
#[derive(Debug)]
pub struct LabLock {
    _file: File,
}

impl LabDir {
    /// The directory of lab `name` under `home` (see [`gpulab_home`]).
    pub fn new(home: &Path, name: &str) -> Self {
        LabDir {
            path: home.join("labs").join(name),
        }
    }

    /// The lab's name (the directory's).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// The kubeconfig gpulab writes for kubectl.
    pub fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }

    /// Take the lab's lock, or fail at once naming the lab if another process holds it.
    pub fn lock(&self) -> Result<LabLock> {
        self.create()?;
        let path = self.path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(LabLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::State {
                path,
                message:
                    "another gpulab process is changing this lab; wait for it to finish, or stop it"
                        .into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", path.display()), e))
            }
        }
    }

    /// The lab's state, or `None` if it has none (never brought up, or fully removed).
    pub fn load(&self) -> Result<Option<LabState>> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                let name = self.name();
                Error::State {
                    message: format!(
                        "unreadable ({e}); gpulab will not guess what the lab owns. Fix the file, or move it away and run `gpulab down --name {name} --region REGION --find-by-tag` to find the lab's resources by its tags"
                    ),
                    path,
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Write the state atomically (a crash leaves the old or the new file, never half of one), private
    /// to the user.
    pub fn save(&self, state: &LabState) -> Result<()> {
        self.create()?;
        let json = serde_json::to_vec_pretty(state).expect("state always serialises");
        write_private_atomically(&self.state_file(), &json)
    }

    /// Remove the state (after a complete `down`); the lock file stays until the directory goes.
    pub fn forget(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.path.display()), e)),
        }
    }

    fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .map_err(|e| Error::io(format!("create {}", self.path.display()), e))
    }
}

/// The labs with a state directory under `home`, by name: each with its state, or the error that makes
/// it unreadable (one corrupt lab does not hide the others). Directories without a state file (a lab
/// whose `up` never got past preflight) are left out.
pub fn list_labs(home: &Path) -> Result<Vec<(String, Result<LabState>)>> {
    let labs = home.join("labs");
    let entries = match std::fs::read_dir(&labs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", labs.display()), e)),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match LabDir::new(home, &name).load() {
            Ok(Some(state)) => found.push((name, Ok(state))),
            Ok(None) => {}
            Err(e) => found.push((name, Err(e))),
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn state_round_trips_privately() {
        let home = tempfile::tempdir().unwrap();
        let dir = LabDir::new(home.path(), "lab");
        assert_eq!(dir.load().unwrap(), None);
        let mut state = LabState::new(
            LabId::generate().unwrap(),
            LabSpec::default(),
            Provider::Aws,
        );
        state.mark_done(UpStep::Provision);
        state.mark_done(UpStep::Provision);
        state.add_resource(ResourceRef::new(
            crate::provision::ResourceKind::Vpc,
            "vpc-1",
        ));
        dir.save(&state).unwrap();
        assert_eq!(dir.load().unwrap(), Some(state.clone()));
        assert_eq!(state.steps_done, [UpStep::Provision]);
        // Recorded by name, as every earlier gpulab wrote them; an unknown name is an error.
        let text = std::fs::read_to_string(dir.state_file()).unwrap();
        assert!(
            text.contains("\"steps_done\": [\n    \"provision\"\n  ]"),
            "{text}"
        );
        std::fs::write(
            dir.state_file(),
            text.replace("\"provision\"", "\"network\""),
        )
        .unwrap();
        assert!(dir.load().is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.state_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(list_labs(home.path()).unwrap().len(), 1);
        dir.forget().unwrap();
        assert!(list_labs(home.path()).unwrap().is_empty());
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let home = tempfile::tempdir().unwrap();
        let dir = LabDir::new(home.path(), "lab");
        let first = dir.lock().unwrap();
        let err = dir.lock().unwrap_err();
        assert!(err.to_string().contains("another gpulab process"), "{err}");
        drop(first);
        dir.lock().unwrap();
    }

    #[test]
    fn node_hours_follow_the_history() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut state = LabState::new(
            LabId::generate().unwrap(),
            LabSpec::default(),
            Provider::Aws,
        );
        state.created_at = t0;
        state.set_nodes(1, t0);
        state.set_nodes(2, t0 + Duration::from_secs(3600));
        state.set_nodes(2, t0 + Duration::from_secs(5400));
        state.set_nodes(0, t0 + Duration::from_secs(7200));
        let now = t0 + Duration::from_secs(10800);
        assert_eq!(state.node_history.len(), 3);
        assert!((state.node_hours(now) - 3.0).abs() < 1e-9);
        assert!((state.age_hours(now) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn unreadable_state_says_what_to_do() {
        let home = tempfile::tempdir().unwrap();
        let dir = LabDir::new(home.path(), "lab");
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.state_file(), "{").unwrap();
        assert!(
            dir.load()
                .unwrap_err()
                .to_string()
                .contains("--find-by-tag")
        );
    }

    #[test]
    fn a_corrupt_provider_or_a_missing_id_is_an_error_not_a_default() {
        let home = tempfile::tempdir().unwrap();
        let dir = LabDir::new(home.path(), "lab");
        let state = LabState::new(
            LabId::generate().unwrap(),
            LabSpec::default(),
            Provider::Aws,
        );
        dir.save(&state).unwrap();
        let good: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.state_file()).unwrap()).unwrap();
        for (field, value) in [
            ("provider", serde_json::json!("{\"kind\":\"aws\"}")),
            ("provider", serde_json::json!({"kind": "gcp"})),
            ("id", serde_json::json!("../../etc")),
            ("id", serde_json::Value::Null),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            std::fs::write(dir.state_file(), bad.to_string()).unwrap();
            let err = dir.load().unwrap_err().to_string();
            assert!(err.contains("unreadable"), "{field}: {err}");
        }
    }

    #[test]
    fn one_corrupt_lab_does_not_hide_the_others() {
        let home = tempfile::tempdir().unwrap();
        let good = LabDir::new(home.path(), "good");
        good.save(&LabState::new(
            LabId::generate().unwrap(),
            LabSpec::default(),
            Provider::Aws,
        ))
        .unwrap();
        let bad = LabDir::new(home.path(), "bad");
        std::fs::create_dir_all(bad.path()).unwrap();
        std::fs::write(bad.state_file(), "{").unwrap();
        let labs = list_labs(home.path()).unwrap();
        assert_eq!(labs.len(), 2);
        assert!(labs[0].1.is_err() && labs[0].0 == "bad");
        assert!(labs[1].1.is_ok() && labs[1].0 == "good");
    }
}
