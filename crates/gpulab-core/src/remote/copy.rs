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
use std::time::Instant;

use serde::Serialize;

use super::glob::{expand_local, expand_remote};
use super::{CopyDirection, CopyOptions, RemoteExec, TransferStats};
use crate::events::Reporter;
use crate::{Error, Result};

/// How a copy reaches the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// SFTP and tar over SSH, through the API server's port-forward to the pod's sshd: the fast way.
    #[default]
    Ssh,
    /// tar through the API server's exec, as `kubectl cp` does: for workspaces without sshd.
    Kube,
}

impl std::str::FromStr for Via {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ssh" => Ok(Via::Ssh),
            "kube" => Ok(Via::Kube),
            other => Err(Error::Usage {
                message: format!("via: {other:?} is not a way to reach the workspace"),
                hint: "use `ssh` (SFTP over the port-forward, the default) or `kube` (tar through the API server's exec)".into(),
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
