//! `gpulab sync LOCAL_DIR :REMOTE_DIR` (and back): make one directory's content mirror another's,
//! sending only what changed. The edit-locally, run-on-the-GPU loop.
//!
//! Both trees are listed (the workspace's over SFTP, the directories of one depth together), filtered by
//! the source's `.gitignore` files and `--exclude` patterns (gitignore syntax, from the synced root), and
//! compared: a file is sent when the other side lacks it or its size or modification time differs (or,
//! with `checksum`, its SHA-256), a link when it points elsewhere; modes and directory times that differ
//! are set. With `delete`, what the target holds and the source does not is removed, except what the
//! filters exclude (rsync's rule: excluded files are protected). A rerun over an unchanged tree is the
//! two listings and nothing else.
//!
//! The files go as a copy does ([`super::ssh`]): many at once as one tar stream when there are many,
//! pipelined over SFTP otherwise; either way each target file is replaced whole or not at all.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ssh::SshSession;
use super::ssh::transfer::{Sftp, join_remote, normalize_remote, upload_tar};
use super::tree::{COPIED_MODE, Item, Kind, local_item, local_under, walk_local};
use super::{ExecRequest, Links, RemoteExec};
use crate::events::{ByteProgress, Event, Reporter};
use crate::{Error, Result};

/// More changed files than this go as one tar stream rather than file by file.
const TAR_FROM: usize = 32;

/// How a sync compares and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Compare files of the same size by SHA-256 rather than by modification time.
    pub checksum: bool,
    /// Remove from the target what the source does not hold (and the filters do not exclude).
    pub delete: bool,
    /// Only say what would be sent and removed.
    pub dry_run: bool,
    /// Patterns to leave out, in `.gitignore` syntax, relative to the synced root (`*.pt`, `/data/`).
    pub exclude: Vec<String>,
    /// Ignore the source's `.gitignore` files (on by default through [`SyncOptions::new`]).
    pub no_gitignore: bool,
    /// Symbolic links inside the tree.
    pub links: Links,
}

impl SyncOptions {
    /// The defaults: compare by size and time, delete nothing, honour `.gitignore`, follow links.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Which way a sync goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncDirection {
    /// Make the workspace directory `remote` mirror the local directory `local`.
    Up {
        /// The local source directory.
        local: PathBuf,
        /// The workspace target directory (created if missing).
        remote: String,
    },
    /// Make the local directory `local` mirror the workspace directory `remote`.
    Down {
        /// The workspace source directory.
        remote: String,
        /// The local target directory (created if missing).
        local: PathBuf,
    },
}

impl SyncDirection {
    /// `SOURCE TARGET` as the command line gives them: one of the two is a workspace path (`:PATH`). A
    /// command line that cannot work is [`Error::Usage`] (exit code 2).
    pub fn parse(source: &str, target: &str) -> Result<SyncDirection> {
        let usage = |problem: &str| Error::Usage {
            message: format!("gpulab sync {source} {target}: {problem}"),
            hint:
                "`gpulab sync ./project :/workspace/project` or `gpulab sync :/workspace/out ./out`"
                    .into(),
        };
        match (source.strip_prefix(':'), target.strip_prefix(':')) {
            (None, Some(remote)) if !remote.is_empty() && !source.is_empty() => {
                Ok(SyncDirection::Up {
                    local: source.into(),
                    remote: remote.into(),
                })
            }
            (Some(remote), None) if !remote.is_empty() && !target.is_empty() => {
                Ok(SyncDirection::Down {
                    remote: remote.into(),
                    local: target.into(),
                })
            }
            (Some(_), Some(_)) | (None, None) => Err(usage(
                "one side must be local and the other in the workspace (`:PATH`)",
            )),
            _ => Err(usage("both sides need a path")),
        }
    }
}

/// What a sync did, or with `dry_run` would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Files and links sent (new or changed), relative to the root.
    pub sent: Vec<String>,
    /// Entries removed from the target.
    pub deleted: Vec<String>,
    /// Entries whose mode or times alone were set.
    pub updated: Vec<String>,
    /// Entries the source holds after filtering (the listing's size).
    pub listed: u64,
    /// Bytes of file content sent.
    pub bytes: u64,
    /// Whether nothing was changed (`dry_run`).
    pub dry_run: bool,
    /// Wall time.
    pub elapsed: Duration,
}

/// The source's filters: `--exclude` patterns at the root, and each directory's `.gitignore`.
struct Filter {
    exclude: Gitignore,
    gitignores: BTreeMap<String, Gitignore>,
}

fn build_ignore(lines: impl IntoIterator<Item = String>, what: &str) -> Result<Gitignore> {
    let mut builder = GitignoreBuilder::new("");
    for line in lines {
        builder.add_line(None, &line).map_err(|e| Error::Usage {
            message: format!("{what}: {line:?} is not a pattern gpulab can read: {e}"),
            hint: "patterns follow .gitignore's syntax: `*.pt`, `/data/`, `build/`".into(),
        })?;
    }
    builder.build().map_err(|e| Error::Usage {
        message: format!("{what}: {e}"),
        hint: "patterns follow .gitignore's syntax: `*.pt`, `/data/`, `build/`".into(),
    })
}

impl Filter {
    fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        if self.exclude.matched(rel, is_dir).is_ignore() {
            return true;
        }
        // The deepest .gitignore that has a say decides, as git does.
        let mut dir = rel;
        loop {
            dir = match dir.rsplit_once('/') {
                Some((parent, _)) => parent,
                None if !dir.is_empty() => "",
                None => break,
            };
            if let Some(rules) = self.gitignores.get(dir) {
                let under = if dir.is_empty() {
                    rel
                } else {
                    &rel[dir.len() + 1..]
                };
                let matched = rules.matched(under, is_dir);
                if matched.is_ignore() {
                    return true;
                }
                if matched.is_whitelist() {
                    return false;
                }
            }
            if dir.is_empty() {
                break;
            }
        }
        false
    }

    /// `items` without what is ignored, or lies in an ignored directory.
    fn apply(&self, items: Vec<Item>) -> Vec<Item> {
        let mut ignored_dirs: HashSet<String> = HashSet::new();
        items
            .into_iter()
            .filter(|item| {
                let in_ignored = item
                    .rel
                    .match_indices('/')
                    .any(|(i, _)| ignored_dirs.contains(&item.rel[..i]));
                if in_ignored || self.ignored(&item.rel, item.kind == Kind::Dir) {
                    if item.kind == Kind::Dir {
                        ignored_dirs.insert(item.rel.clone());
                    }
                    return false;
                }
                true
            })
            .collect()
    }
}

/// The `.gitignore` files among `items`, by directory.
fn gitignore_dirs(items: &[Item]) -> Vec<(String, String)> {
    items
        .iter()
        .filter(|i| {
            i.kind == Kind::File && (i.rel == ".gitignore" || i.rel.ends_with("/.gitignore"))
        })
        .map(|i| {
            let dir = i.rel.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            (dir, i.rel.clone())
        })
        .collect()
}

/// What to do, from the two listings.
#[derive(Debug, Default)]
struct Plan {
    /// Source entries to send (files and links), and the directories they need.
    send: Vec<Item>,
    /// Target entries to remove (with everything under a removed directory).
    delete: Vec<Item>,
    /// Source entries whose mode or times alone differ.
    attrs: Vec<Item>,
    /// Files of the same size whose contents must be compared (with `checksum`).
    compare: Vec<Item>,
}

fn plan(source: &[Item], target: &[Item], options: &SyncOptions) -> Plan {
    let theirs: BTreeMap<&str, &Item> = target.iter().map(|i| (i.rel.as_str(), i)).collect();
    let ours: HashSet<&str> = source.iter().map(|i| i.rel.as_str()).collect();
    let mut plan = Plan::default();
    let mut replaced: Vec<&str> = Vec::new();
    for item in source {
        match (item.kind, theirs.get(item.rel.as_str())) {
            (Kind::Dir, Some(t)) if t.kind == Kind::Dir => {
                if t.mode != item.mode || t.mtime != item.mtime {
                    plan.attrs.push(item.clone());
                }
            }
            (Kind::Dir, None) => plan.send.push(item.clone()),
            (Kind::File, Some(t)) if t.kind == Kind::File && t.size == item.size => {
                if options.checksum {
                    plan.compare.push(item.clone());
                } else if t.mtime != item.mtime {
                    plan.send.push(item.clone());
                } else if t.mode != item.mode {
                    plan.attrs.push(item.clone());
                }
            }
            (Kind::Link, Some(t)) if t.kind == Kind::Link && t.link == item.link => {}
            (_, Some(t)) => {
                if t.kind != item.kind && (t.kind == Kind::Dir || item.kind == Kind::Dir) {
                    replaced.push(t.rel.as_str());
                }
                plan.send.push(item.clone());
            }
            (_, None) => plan.send.push(item.clone()),
        }
    }
    // Removed: what the source lacks (with `delete`), and what a different kind of entry replaces.
    let mut gone: HashSet<&str> = HashSet::new();
    for item in target {
        let parent_gone = item
            .rel
            .rsplit_once('/')
            .is_some_and(|(parent, _)| gone.contains(parent));
        let replaced_here = replaced.contains(&item.rel.as_str());
        if parent_gone || replaced_here || (options.delete && !ours.contains(item.rel.as_str())) {
            gone.insert(item.rel.as_str());
            plan.delete.push(item.clone());
        }
    }
    plan
}

/// The directories `sent` needs that the plan does not send already, taken from `source`.
fn with_parents(mut sent: Vec<Item>, source: &[Item]) -> Vec<Item> {
    let have: HashSet<String> = sent.iter().map(|i| i.rel.clone()).collect();
    let mut need: HashSet<String> = HashSet::new();
    for item in &sent {
        let mut rel = item.rel.as_str();
        while let Some((parent, _)) = rel.rsplit_once('/') {
            if !have.contains(parent) {
                need.insert(parent.to_string());
            }
            rel = parent;
        }
    }
    sent.extend(
        source
            .iter()
            .filter(|i| i.kind == Kind::Dir && need.contains(&i.rel))
            .cloned(),
    );
    // Parents before children, as the copies need them.
    sent.sort_by(|a, b| (a.depth(), &a.rel).cmp(&(b.depth(), &b.rel)));
    sent
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Hashes every file in the directory `$1` named (NUL-separated) on standard input.
const HASH: &str = r#"cd -- "$1" || exit 2
xargs -0 sha256sum -z --
"#;

/// The SHA-256 of `files` (relative to the workspace directory `root`), by name.
async fn remote_hashes(
    session: &SshSession,
    root: &str,
    files: &[Item],
) -> Result<BTreeMap<String, String>> {
    let mut names = Vec::new();
    for file in files {
        names.extend_from_slice(file.rel.as_bytes());
        names.push(0);
    }
    let out = session
        .exec(ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                HASH.into(),
                "gpulab-sync".into(),
                root.into(),
            ],
            stdin: Some(names),
            ..Default::default()
        })
        .await?;
    if !out.status.success() {
        return Err(Error::Remote {
            message: format!(
                "sync --checksum: hash the files in {root}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            hint: Some("the workspace needs GNU coreutils' sha256sum (with -z)".into()),
        });
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|line| line.len() > 66)
        .map(|line| {
            let hash = String::from_utf8_lossy(&line[..64]).into_owned();
            let name = String::from_utf8_lossy(&line[66..]).into_owned();
            (name, hash)
        })
        .collect())
}

/// Run one sync over `session`.
pub async fn sync(
    session: &SshSession,
    direction: &SyncDirection,
    options: &SyncOptions,
    reporter: &dyn Reporter,
) -> Result<SyncReport> {
    let started = Instant::now();
    let exclude = build_ignore(options.exclude.iter().cloned(), "--exclude")?;
    let sftp = Sftp::open(session).await?;
    let mut report = SyncReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    match direction {
        SyncDirection::Up { local, remote } => {
            let meta = std::fs::metadata(local)
                .map_err(|e| Error::io(format!("read {}", local.display()), e))?;
            if !meta.is_dir() {
                return Err(Error::Remote {
                    message: format!("sync: {} is not a directory", local.display()),
                    hint: Some(
                        "sync mirrors directories; copy single files with `gpulab cp`".into(),
                    ),
                });
            }
            let remote = normalize_remote(remote);
            let root = local_item(String::new(), &meta);
            let items = walk_local(local, options.links, reporter)?;
            let mut gitignores = BTreeMap::new();
            if !options.no_gitignore {
                for (dir, file) in gitignore_dirs(&items) {
                    let text = std::fs::read_to_string(local.join(&file)).unwrap_or_default();
                    gitignores.insert(dir, build_ignore(text.lines().map(str::to_owned), &file)?);
                }
            }
            let filter = Filter {
                exclude,
                gitignores,
            };
            let source = filter.apply(items);
            let target = match sftp.stat(&remote).await? {
                Some(attrs) if attrs.permissions.unwrap_or(0) & 0o170_000 == 0o040_000 => {
                    filter.apply(sftp.walk(&remote, options.links, reporter).await?)
                }
                Some(_) => {
                    return Err(Error::Remote {
                        message: format!("sync: {remote} in the workspace is not a directory"),
                        hint: None,
                    });
                }
                None => Vec::new(),
            };
            report.listed = source.len() as u64;
            let mut plan = plan(&source, &target, options);
            if !plan.compare.is_empty() {
                let theirs = remote_hashes(session, &remote, &plan.compare).await?;
                for item in std::mem::take(&mut plan.compare) {
                    if theirs.get(&item.rel) != Some(&sha256_file(&local.join(&item.rel))?) {
                        plan.send.push(item);
                    }
                }
            }
            fill_report(&mut report, &plan);
            if options.dry_run {
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            sftp.remove_items(&remote, &plan.delete).await?;
            let files = plan.send.iter().filter(|i| i.kind != Kind::Dir).count();
            let sending = with_parents(plan.send, &source);
            let via_tar = files > TAR_FROM
                && upload_tar(session, local, &remote, &root, &sending, reporter)
                    .await?
                    .is_some();
            if !via_tar && (!sending.is_empty() || target.is_empty()) {
                let progress = Mutex::new(ByteProgress::new(
                    reporter,
                    format!("sync {}", local.display()),
                    Some(report.bytes),
                ));
                let mut all = vec![root.clone()];
                all.extend(sending);
                sftp.upload_items(local, &remote, &all, &progress).await?;
            }
            let mut attrs = plan.attrs;
            attrs.push(root);
            sftp.set_items_attrs(&remote, &attrs).await?;
        }
        SyncDirection::Down { remote, local } => {
            let remote = normalize_remote(remote);
            match sftp.stat(&remote).await? {
                Some(attrs) if attrs.permissions.unwrap_or(0) & 0o170_000 == 0o040_000 => {}
                _ => {
                    return Err(Error::Remote {
                        message: format!("sync: {remote} is not a directory in the workspace"),
                        hint: Some(
                            "sync mirrors directories; copy single files with `gpulab cp`".into(),
                        ),
                    });
                }
            }
            let root_attrs = sftp.stat(&remote).await?.unwrap_or_default();
            let root = Item {
                rel: String::new(),
                kind: Kind::Dir,
                size: 0,
                mode: root_attrs.permissions.unwrap_or(0o755) & COPIED_MODE,
                atime: root_attrs.atime.unwrap_or(0),
                mtime: root_attrs.mtime.unwrap_or(0),
                link: None,
            };
            let items = sftp.walk(&remote, options.links, reporter).await?;
            let mut gitignores = BTreeMap::new();
            if !options.no_gitignore {
                for (dir, file) in gitignore_dirs(&items) {
                    let text = sftp.read_file(&join_remote(&remote, &file)).await?;
                    let text = String::from_utf8_lossy(&text);
                    gitignores.insert(dir, build_ignore(text.lines().map(str::to_owned), &file)?);
                }
            }
            let filter = Filter {
                exclude,
                gitignores,
            };
            let source = filter.apply(items);
            let target = if local.is_dir() {
                filter.apply(walk_local(local, options.links, reporter)?)
            } else if local.exists() {
                return Err(Error::Remote {
                    message: format!("sync: {} is not a directory", local.display()),
                    hint: None,
                });
            } else {
                Vec::new()
            };
            report.listed = source.len() as u64;
            let mut plan = plan(&source, &target, options);
            if !plan.compare.is_empty() {
                let theirs = remote_hashes(session, &remote, &plan.compare).await?;
                for item in std::mem::take(&mut plan.compare) {
                    if theirs.get(&item.rel) != Some(&sha256_file(&local.join(&item.rel))?) {
                        plan.send.push(item);
                    }
                }
            }
            fill_report(&mut report, &plan);
            if options.dry_run {
                report.elapsed = started.elapsed();
                return Ok(report);
            }
            remove_local(local, &plan.delete)?;
            let sending = with_parents(plan.send, &source);
            let progress = Mutex::new(ByteProgress::new(
                reporter,
                format!("sync :{remote}"),
                Some(report.bytes),
            ));
            let mut all = vec![root.clone()];
            all.extend(sending);
            sftp.download_items(&remote, local, &all, &progress).await?;
            let mut attrs = plan.attrs;
            attrs.push(root);
            set_local_attrs(local, &attrs)?;
        }
    }
    for rel in &report.deleted {
        reporter.report(Event::Progress {
            step: format!("deleted {rel}"),
            done: 1,
            total: Some(1),
            unit: crate::events::Unit::Items,
        });
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn fill_report(report: &mut SyncReport, plan: &Plan) {
    report.sent = plan
        .send
        .iter()
        .filter(|i| i.kind != Kind::Dir)
        .map(|i| i.rel.clone())
        .collect();
    report.bytes = plan.send.iter().map(|i| i.size).sum();
    report.deleted = plan.delete.iter().map(|i| i.rel.clone()).collect();
    report.updated = plan.attrs.iter().map(|i| i.rel.clone()).collect();
}

/// Remove `items` under the local directory `root`: files and links, then directories deepest first.
fn remove_local(root: &Path, items: &[Item]) -> Result<()> {
    for item in items.iter().filter(|i| i.kind != Kind::Dir) {
        let path = local_under(root, &item.rel)?;
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    let mut dirs: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::Dir).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.depth()));
    for dir in dirs {
        let path = local_under(root, &dir.rel)?;
        std::fs::remove_dir(&path)
            .map_err(|e| Error::io(format!("remove the directory {}", path.display()), e))?;
    }
    Ok(())
}

/// Set the mode and times of `items` under the local directory `root` (directories deepest first).
fn set_local_attrs(root: &Path, items: &[Item]) -> Result<()> {
    let mut items: Vec<&Item> = items.iter().filter(|i| i.kind != Kind::Link).collect();
    items.sort_by_key(|i| std::cmp::Reverse(if i.rel.is_empty() { 0 } else { i.depth() + 1 }));
    for item in items {
        let path = if item.rel.is_empty() {
            root.to_path_buf()
        } else {
            local_under(root, &item.rel)?
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(item.mode))
            .map_err(|e| Error::io(format!("set the mode of {}", path.display()), e))?;
        let time = UNIX_EPOCH + Duration::from_secs(item.mtime.into());
        std::fs::File::open(&path)
            .and_then(|f| {
                f.set_times(
                    std::fs::FileTimes::new()
                        .set_modified(time)
                        .set_accessed(UNIX_EPOCH + Duration::from_secs(item.atime.into())),
                )
            })
            .map_err(|e| Error::io(format!("set the times of {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(rel: &str, kind: Kind, size: u64, mtime: u32) -> Item {
        Item {
            rel: rel.into(),
            kind,
            size,
            mode: 0o644,
            atime: 0,
            mtime,
            link: None,
        }
    }

    #[test]
    fn gitignore_and_excludes_filter_the_source() {
        let filter = Filter {
            exclude: build_ignore(["*.pt".to_string()], "--exclude").unwrap(),
            gitignores: BTreeMap::from([
                (
                    String::new(),
                    build_ignore(["build/".into(), "*.log".into()], ".gitignore").unwrap(),
                ),
                (
                    "sub".to_string(),
                    build_ignore(["!keep.log".into()], "sub/.gitignore").unwrap(),
                ),
            ]),
        };
        let items = vec![
            item("a.py", Kind::File, 1, 1),
            item("build", Kind::Dir, 0, 1),
            item("model.pt", Kind::File, 1, 1),
            item("run.log", Kind::File, 1, 1),
            item("sub", Kind::Dir, 0, 1),
            item("build/out.o", Kind::File, 1, 1),
            item("sub/keep.log", Kind::File, 1, 1),
            item("sub/other.log", Kind::File, 1, 1),
            item("sub/w.pt", Kind::File, 1, 1),
        ];
        let kept: Vec<String> = filter.apply(items).into_iter().map(|i| i.rel).collect();
        assert_eq!(kept, ["a.py", "sub", "sub/keep.log"]);
        assert!(
            build_ignore(["{a".to_string()], "--exclude")
                .unwrap_err()
                .is_usage()
        );
    }

    #[test]
    fn the_plan_sends_what_changed_and_deletes_only_when_asked() {
        let source = vec![
            item("same", Kind::File, 3, 10),
            item("newer", Kind::File, 3, 20),
            item("new", Kind::File, 1, 10),
            item("d", Kind::Dir, 0, 10),
            item("d/x", Kind::File, 1, 10),
        ];
        let mut target = vec![
            item("same", Kind::File, 3, 10),
            item("newer", Kind::File, 3, 10),
            item("gone", Kind::File, 1, 10),
            item("d", Kind::File, 5, 10),
        ];
        target[0].mode = 0o600;
        let keep = plan(&source, &target, &SyncOptions::default());
        let rels = |items: &[Item]| items.iter().map(|i| i.rel.clone()).collect::<Vec<_>>();
        assert_eq!(rels(&keep.send), ["newer", "new", "d", "d/x"]);
        assert_eq!(rels(&keep.attrs), ["same"]);
        assert_eq!(
            rels(&keep.delete),
            ["d"],
            "a file where a directory goes is replaced"
        );
        let mirror = plan(
            &source,
            &target,
            &SyncOptions {
                delete: true,
                ..Default::default()
            },
        );
        assert_eq!(rels(&mirror.delete), ["gone", "d"]);
        let checked = plan(
            &source,
            &target,
            &SyncOptions {
                checksum: true,
                ..Default::default()
            },
        );
        assert_eq!(rels(&checked.compare), ["same", "newer"]);
        assert!(
            plan(&source, &source, &SyncOptions::default())
                .send
                .is_empty()
        );
    }

    #[test]
    fn sides_are_told_by_the_colon() {
        assert!(matches!(
            SyncDirection::parse("src", ":/w/src").unwrap(),
            SyncDirection::Up { .. }
        ));
        assert!(matches!(
            SyncDirection::parse(":/w/out", "out").unwrap(),
            SyncDirection::Down { .. }
        ));
        for (a, b) in [(":/a", ":/b"), ("a", "b"), (":", "x")] {
            assert!(
                SyncDirection::parse(a, b).unwrap_err().is_usage(),
                "{a} {b}"
            );
        }
    }

    #[test]
    fn sent_files_bring_their_directories() {
        let source = vec![
            item("a", Kind::Dir, 0, 1),
            item("a/b", Kind::Dir, 0, 1),
            item("a/b/f", Kind::File, 1, 1),
            item("c", Kind::Dir, 0, 1),
        ];
        let sent = with_parents(vec![source[2].clone()], &source);
        let rels: Vec<&str> = sent.iter().map(|i| i.rel.as_str()).collect();
        assert_eq!(rels, ["a", "a/b", "a/b/f"]);
    }
}
