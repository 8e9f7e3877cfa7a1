//! One copy for every frontend: `gpulab cp`, Python's `Lab.copy_to`/`copy_from` and Rust's
//! [`crate::Lab::copy`] all run [`copy`]. The sources are all local or all in the workspace (`:PATH`),
//! the target on the other side; globs are expanded on their side (`*.csv` on this machine, `:/w/*.csv`
//! in the workspace); several sources go into a target directory that must exist.
//!
//! ```
//! use gpulab_core::remote::copy::CopyPlan;
//!
//! let plan = CopyPlan::parse(&["train.py".into(), "data/".into()], ":/workspace/").unwrap();
//! assert!(matches!(plan, CopyPlan::Upload { .. }));
//! assert!(CopyPlan::parse(&[":/a".into()], ":/b").is_err()); // both in the workspace: exit code 2
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Serialize;

use super::api_server::{ApiServerExec, Attempt};
use super::glob::{expand_local, expand_remote, has_glob};
use super::ssh::SshSession;
use super::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, RemoteExec, TransferStats,
    Tunnel,
};
use crate::events::Reporter;
use crate::{Error, Result};

/// How a copy reaches the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// One source: one tar stream through the API server's exec, with SSH's paths and user (no SSH
    /// handshake, one layer of encryption); SSH when the workspace has no tar or exec runs as another
    /// user. Several sources, globs in the workspace, or file by file: SSH, whose one connection serves
    /// them all.
    #[default]
    Auto,
    /// SFTP and tar over SSH, through the API server's port-forward to the pod's sshd.
    Ssh,
    /// tar through the API server's exec, as `kubectl cp` does (relative paths from the container's
    /// working directory, as its user): for workspaces without sshd.
    Kube,
}

impl std::str::FromStr for Via {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Via::Auto),
            "ssh" => Ok(Via::Ssh),
            "kube" => Ok(Via::Kube),
            other => Err(Error::Usage {
                message: format!("via: {other:?} is not a way to reach the workspace"),
                hint: "use `auto` (the default), `ssh` (SFTP over the port-forward) or `kube` (tar through the API server's exec)".into(),
            }),
        }
    }
}

/// Which way a copy goes, with its paths as given (workspace paths without their `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlan {
    /// Local sources (perhaps patterns) into the workspace.
    Upload {
        /// Local paths or patterns.
        sources: Vec<String>,
        /// The workspace path.
        target: String,
    },
    /// Workspace sources (perhaps patterns) to this machine.
    Download {
        /// Workspace paths or patterns.
        sources: Vec<String>,
        /// The local path.
        target: PathBuf,
    },
}

impl CopyPlan {
    /// Which side each argument is on: the sources all on one, the target on the other; workspace paths
    /// start with `:`. A command line that cannot work is [`Error::Usage`] (exit code 2).
    pub fn parse(sources: &[String], target: &str) -> Result<CopyPlan> {
        let usage = |problem: &str| {
            let mut words = sources.to_vec();
            words.push(target.to_string());
            Error::Usage {
                message: format!("gpulab cp {}: {problem}", words.join(" ")),
                hint: "`gpulab cp a.py b.py :/workspace/` or `gpulab cp ':/workspace/out/*.csv' .`"
                    .into(),
            }
        };
        if sources.is_empty() {
            return Err(usage("there is nothing to copy: name at least one source"));
        }
        let remote: Vec<Option<&str>> = sources.iter().map(|s| s.strip_prefix(':')).collect();
        let all_remote = remote.iter().all(Option::is_some);
        let all_local = remote.iter().all(Option::is_none);
        if !all_remote && !all_local {
            return Err(usage(
                "the sources must all be local or all in the workspace (`:PATH`), not some of each",
            ));
        }
        match (all_remote, target.strip_prefix(':')) {
            (false, Some(target)) => Ok(CopyPlan::Upload {
                sources: sources.to_vec(),
                target: target.into(),
            }),
            (true, None) => Ok(CopyPlan::Download {
                sources: remote.into_iter().flatten().map(str::to_owned).collect(),
                target: PathBuf::from(target),
            }),
            _ => Err(usage(
                "one side must be local and the other in the workspace (`:PATH`)",
            )),
        }
    }
}

/// Why the target must be an existing directory, if it must: several sources go into one, and a target
/// written with a trailing `/` names one.
fn needs_directory(target: &str, sources: usize) -> Option<String> {
    if sources > 1 {
        Some(format!("{sources} sources need a directory to go into"))
    } else if target.ends_with('/') {
        Some("a target ending in `/` names a directory".into())
    } else {
        None
    }
}

/// Check that the local `target` is a directory when it must be.
fn local_target_dir(target: &Path, sources: usize) -> Result<()> {
    let Some(why) = needs_directory(&target.to_string_lossy(), sources) else {
        return Ok(());
    };
    if target.is_dir() {
        return Ok(());
    }
    Err(Error::io(
        format!("copy into {}", target.display()),
        std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("not a directory, and {why}; create it first, or copy one source at a time"),
        ),
    ))
}

/// A plan whose local side has been checked, and whose local globs are expanded: everything that can be
/// known without the workspace.
#[derive(Debug, Clone)]
pub struct CheckedPlan {
    plan: CopyPlan,
    uploads: Vec<PathBuf>,
}

impl CheckedPlan {
    /// Whether [`Via::Auto`] tries the API server's exec: one source, named without a glob (a workspace
    /// pattern could match many, which one SSH connection serves best), with a name of its own.
    pub(crate) fn exec_first(&self, options: &CopyOptions) -> bool {
        if options.file_by_file {
            return false;
        }
        match &self.plan {
            CopyPlan::Upload { .. } => self.uploads.len() == 1,
            CopyPlan::Download { sources, .. } => match sources.as_slice() {
                [source] => {
                    !has_glob(source)
                        && Path::new(source)
                            .file_name()
                            .is_some_and(|name| name != "~" && !name.is_empty())
                }
                _ => false,
            },
        }
    }
}

impl CopyPlan {
    /// Expand the local globs and check the local target, before the cluster is asked anything.
    pub async fn check_local(self) -> Result<CheckedPlan> {
        let mut uploads = Vec::new();
        match &self {
            CopyPlan::Upload { sources, .. } => {
                for source in sources {
                    uploads.extend(expand_local(source).await?);
                }
            }
            CopyPlan::Download { sources, target } => local_target_dir(target, sources.len())?,
        }
        Ok(CheckedPlan {
            plan: self,
            uploads,
        })
    }
}

/// What a copy of several sources did: the totals, and how far it got when it failed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Files and bytes moved, and the wall time.
    pub stats: TransferStats,
    /// The sources copied, after glob expansion.
    pub sources: Vec<String>,
    /// The transport that carried them ([`Via::Ssh`] or [`Via::Kube`]); `None` before the first.
    pub via: Option<Via>,
}

/// The error of a copy that failed part way, with what it had copied by then.
#[derive(Debug)]
pub struct CopyFailed {
    /// What had been copied before the error.
    pub done: CopyReport,
    /// The error.
    pub error: Error,
}

/// Run the checked `plan` over `remote`: expand the workspace's globs, check the target there, and copy
/// each source in turn. On failure, what was copied before it comes with the error.
pub async fn copy(
    remote: &dyn RemoteExec,
    checked: CheckedPlan,
    options: &CopyOptions,
    reporter: &dyn Reporter,
) -> std::result::Result<CopyReport, CopyFailed> {
    let started = Instant::now();
    let mut done = CopyReport::default();
    let fail = |done: CopyReport, error: Error| CopyFailed { done, error };
    let directions: Vec<CopyDirection> = match checked.plan {
        CopyPlan::Upload { target, .. } => {
            if let Some(why) = needs_directory(&target, checked.uploads.len()) {
                match remote.list_dir(&target).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(fail(
                            done,
                            Error::Remote {
                                message: format!(
                                    "copy into :{target}: not a directory in the workspace, and {why}"
                                ),
                                hint: Some(format!(
                                    "create it first (`gpulab exec -- mkdir -p {target}`), or copy one source at a time"
                                )),
                            },
                        ));
                    }
                    Err(e) => return Err(fail(done, e)),
                }
            }
            checked
                .uploads
                .into_iter()
                .map(|local| CopyDirection::Upload {
                    local,
                    remote: target.clone(),
                })
                .collect()
        }
        CopyPlan::Download { sources, target } => {
            let mut found = Vec::new();
            for pattern in &sources {
                match expand_remote(remote, pattern).await {
                    Ok(paths) => found.extend(paths),
                    Err(e) => return Err(fail(done, e)),
                }
            }
            if let Err(e) = local_target_dir(&target, found.len()) {
                return Err(fail(done, e));
            }
            found
                .into_iter()
                .map(|remote| CopyDirection::Download {
                    remote,
                    local: target.clone(),
                })
                .collect()
        }
    };
    for direction in directions {
        let source = match &direction {
            CopyDirection::Upload { local, .. } => local.display().to_string(),
            CopyDirection::Download { remote, .. } => format!(":{remote}"),
        };
        match remote.copy_with(direction, options, reporter).await {
            Ok(stats) => {
                done.stats.files += stats.files;
                done.stats.bytes += stats.bytes;
                done.sources.push(source);
            }
            Err(e) => {
                done.stats.elapsed = started.elapsed();
                return Err(fail(done, e));
            }
        }
    }
    done.stats.elapsed = started.elapsed();
    Ok(done)
}

/// [`Via::Auto`] for one source: the copy goes through the API server's exec, and over SSH (connected
/// only then, by `connect`) when exec cannot take it. Everything else is the API server's.
pub(crate) struct ExecFirst<'a> {
    kube: ApiServerExec,
    connect: Box<dyn Fn() -> BoxFuture<'a, Result<SshSession>> + Send + Sync + 'a>,
    ssh: tokio::sync::OnceCell<SshSession>,
    used: Mutex<Option<Via>>,
}

impl<'a> ExecFirst<'a> {
    /// `kube` should copy [`ApiServerExec::like_ssh`], so that falling back changes no path's meaning.
    pub(crate) fn new(
        kube: ApiServerExec,
        connect: impl Fn() -> BoxFuture<'a, Result<SshSession>> + Send + Sync + 'a,
    ) -> Self {
        ExecFirst {
            kube,
            connect: Box::new(connect),
            ssh: tokio::sync::OnceCell::new(),
            used: Mutex::new(None),
        }
    }

    /// The transport the last copy took.
    pub(crate) fn used(&self) -> Option<Via> {
        *self.used.lock().expect("via lock")
    }

    /// Close the SSH connection, if one was made.
    pub(crate) async fn close(&self) {
        if let Some(ssh) = self.ssh.get() {
            let _ = ssh.close().await;
        }
    }
}

#[async_trait]
impl RemoteExec for ExecFirst<'_> {
    fn name(&self) -> &'static str {
        "kube"
    }

    async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        self.kube.exec_streaming(request, streams).await
    }

    async fn copy_with(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        if !options.file_by_file {
            match self
                .kube
                .try_copy(direction.clone(), options, reporter)
                .await?
            {
                Attempt::Done(stats) => {
                    *self.used.lock().expect("via lock") = Some(Via::Kube);
                    return Ok(stats);
                }
                // No tar, or another user: SSH takes it, as it would have without exec.
                Attempt::Unsuitable(_) => {}
            }
        }
        let ssh = self.ssh.get_or_try_init(|| (self.connect)()).await?;
        let stats = ssh.copy_with(direction, options, reporter).await?;
        *self.used.lock().expect("via lock") = Some(Via::Ssh);
        Ok(stats)
    }

    async fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        self.kube.list_dir(path).await
    }

    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>> {
        self.kube.tunnel(port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<CopyPlan> {
        let (target, sources) = args.split_last().unwrap();
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        CopyPlan::parse(&sources, target)
    }

    #[test]
    fn sides_are_told_by_the_colon() {
        assert_eq!(
            plan(&["a.py", "data", ":/w/"]).unwrap(),
            CopyPlan::Upload {
                sources: vec!["a.py".into(), "data".into()],
                target: "/w/".into()
            }
        );
        assert_eq!(
            plan(&[":/w/*.csv", "."]).unwrap(),
            CopyPlan::Download {
                sources: vec!["/w/*.csv".into()],
                target: ".".into()
            }
        );
        for bad in [
            &[":/a", ":/b"][..],
            &["a", "b"],
            &["a", ":/b", "c"],
            &[":/a", "b", ":/c"],
        ] {
            let err = plan(bad).unwrap_err();
            assert!(err.is_usage(), "{bad:?}: {err}");
        }
        assert!("scp".parse::<Via>().unwrap_err().is_usage());
        assert_eq!("kube".parse::<Via>().unwrap(), Via::Kube);
    }

    #[test]
    fn several_sources_or_a_slash_need_a_directory() {
        assert!(needs_directory("x", 1).is_none());
        assert!(needs_directory("x/", 1).is_some());
        assert!(needs_directory("x", 2).unwrap().contains("2 sources"));
        let dir = tempfile::tempdir().unwrap();
        assert!(local_target_dir(dir.path(), 3).is_ok());
        let err = local_target_dir(&dir.path().join("missing/"), 1).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
