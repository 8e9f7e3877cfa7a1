//! File transfer over SSH: files and directories both ways, modes and modification times kept, progress in
//! bytes, atomic, and fast for many small files as for one large one.
//!
//! **SFTP, pipelined.** Every request of a copy goes out without waiting for the one before where the
//! protocol allows: reads and writes of a file in flight together, up to 64 files at once, and the
//! directories of one depth created together, so a copy costs a few round trips per *depth* of the tree
//! rather than five per file. A shared budget of [`SshTuning::sftp_requests_in_flight`] data requests
//! keeps memory bounded however many files are open. Each file is written under a temporary name in its
//! target directory and renamed into place once complete (after every write has been acknowledged), so a
//! failed or interrupted copy never leaves a truncated file at the target name.
//!
//! **One tar stream.** A directory goes as one tar stream over an SSH exec channel instead
//! ([`archive`]): no round trip per file at all, which is what 20,000 small files need. The workspace
//! unpacks it beside the target and moves it into place (see [`archive::RECEIVE`]); downloads unpack
//! into a private staging directory and are renamed into place. A workspace without `tar` is noticed
//! (exit code [`NO_TAR`]) and the copy goes file by file over SFTP instead, as it also does with
//! [`CopyOptions::file_by_file`].
//!
//! [`SshTuning::sftp_requests_in_flight`]: super::SshTuning::sftp_requests_in_flight

use std::collections::BTreeMap;
use std::fs::FileTimes;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::SshSession;
use crate::events::{ByteProgress, Event, Reporter};
use crate::remote::archive::{self, NO_TAR, RECEIVE, SEND, Staging};
use crate::remote::kube_stream::CHUNK as STREAM_CHUNK;
use crate::remote::tree::{
    COPIED_MODE, Item, Kind, entry_name, local_item, local_under, temp_name, walk_local,
};
use crate::remote::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, Links, RemoteExec,
    TransferStats,
};
use crate::{Error, Result};

/// The largest read or write OpenSSH's sftp-server takes (its 256 KiB message limit less headroom).
const MAX_CHUNK: u64 = 255 * 1024;
/// What every SFTP server must take (draft-ietf-secsh-filexfer-02).
const SAFE_CHUNK: u64 = 32 * 1024;
/// A request that gets no answer in this long fails the copy.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Files open at once in a pipelined copy.
const FILES_IN_FLIGHT: usize = 64;
/// Metadata requests (mkdir, setstat, remove, readdir) in flight at once.
const REQUESTS_IN_FLIGHT: usize = 128;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

fn sftp_err(what: impl std::fmt::Display, e: SftpError) -> Error {
    let hint = match &e {
        SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => Some(
            "the workspace user may not write there; pick a path under /workspace or $HOME".into(),
        ),
        SftpError::Timeout => Some("the connection stalled; check the tunnel and retry".into()),
        _ => None,
    };
    Error::Remote {
        message: format!("sftp: {what}: {e}"),
        hint,
    }
}

fn is_status(e: &SftpError, code: StatusCode) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == code)
}

/// A remote path as sftp-server wants it: `~` and `~/…` are relative to the home directory, where
/// sftp-server starts.
pub(crate) fn normalize_remote(path: &str) -> String {
    let path = path.trim();
    let path = if path == "~" || path.is_empty() {
        "."
    } else if let Some(rest) = path.strip_prefix("~/") {
        if rest.is_empty() { "." } else { rest }
    } else {
        path
    };
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

pub(crate) fn join_remote(dir: &str, name: &str) -> String {
    if name.is_empty() {
        dir.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(crate) fn split_remote(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    }
}

/// Removes a local temporary file unless disarmed: on an error, or when the copy's future is dropped.
struct LocalTemp(Option<PathBuf>);

impl Drop for LocalTemp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Closes a remote handle and removes a remote temporary file unless disarmed. A dropped future cannot
/// wait, so the cleanup runs as its own task on the same SFTP session (which it keeps open until then).
struct RemoteCleanup {
    raw: Arc<RawSftpSession>,
    handle: Option<String>,
    temp: Option<String>,
}

impl Drop for RemoteCleanup {
    fn drop(&mut self) {
        let (handle, temp) = (self.handle.take(), self.temp.take());
        if handle.is_none() && temp.is_none() {
            return;
        }
        let raw = self.raw.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(handle) = handle {
                    let _ = raw.close(handle).await;
                }
                if let Some(temp) = temp {
                    let _ = raw.remove(temp).await;
                }
            });
        }
    }
}

/// Progress shared by the files of one copy.
type Progress<'a> = Mutex<ByteProgress<'a>>;

fn add_progress(progress: &Progress<'_>, n: u64) {
    progress.lock().unwrap_or_else(|e| e.into_inner()).add(n);
}

fn finish_progress(progress: &Progress<'_>) {
    progress.lock().unwrap_or_else(|e| e.into_inner()).finish();
}

fn closed() -> Error {
    Error::Remote {
        message: "sftp: the copy was cancelled".into(),
        hint: None,
    }
}

/// One SFTP session on its own channel, for one copy or sync.
pub(crate) struct Sftp {
    raw: Arc<RawSftpSession>,
    chunk: u64,
    in_flight: usize,
    /// Data requests in flight across all the files of the copy.
    budget: Arc<Semaphore>,
    posix_rename: bool,
    _permit: OwnedSemaphorePermit,
}

/// Run `op` on each of `items`, at most `limit` at once, stopping at the first error. (A loop rather than
/// stream combinators: closures held across an await make the future's lifetimes too hard to prove Send.)
macro_rules! each_limited {
    ($items:expr, $limit:expr, |$item:ident| $op:expr) => {{
        let items = $items;
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        loop {
            while running.len() < $limit && next < items.len() {
                let $item = items[next];
                running.push($op);
                next += 1;
            }
            match running.next().await {
                Some(result) => {
                    result?;
                }
                None => break,
            }
        }
    }};
}

/// The levels of a tree's directories, shallowest first (the root, "", before its children).
fn dir_levels(items: &[Item]) -> Vec<Vec<&Item>> {
    let mut levels: BTreeMap<usize, Vec<&Item>> = BTreeMap::new();
    for item in items.iter().filter(|i| i.kind == Kind::Dir) {
        let level = if item.rel.is_empty() {
            0
        } else {
            item.depth() + 1
        };
        levels.entry(level).or_default().push(item);
    }
    levels.into_values().collect()
}

impl Sftp {
    pub(crate) async fn open(session: &SshSession) -> Result<Sftp> {
        let (channel, permit) = session.open_session_channel().await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| Error::Remote {
                message: format!("ssh: start the sftp subsystem: {e}"),
                hint: Some("the workspace's sshd needs `Subsystem sftp`".into()),
            })?;
        let config = russh_sftp::client::Config {
            // Replies carry up to MAX_CHUNK bytes of data plus headers.
            max_packet_len: 512 * 1024,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            ..Default::default()
        };
        let raw = RawSftpSession::new_with_config(channel.into_stream(), config);
        let version = raw
            .init()
            .await
            .map_err(|e| sftp_err("start the session", e))?;
        let mut chunk = SAFE_CHUNK;
        if version.extensions.contains_key("limits@openssh.com")
            && let Ok(limits) = raw.limits().await
        {
            let max = limits.max_read_len.min(limits.max_write_len);
            chunk = if max == 0 {
                MAX_CHUNK
            } else {
                max.min(MAX_CHUNK)
            };
        }
        let in_flight = session.tuning.sftp_requests_in_flight.max(1);
        Ok(Sftp {
            raw: Arc::new(raw),
            chunk,
            in_flight,
            budget: Arc::new(Semaphore::new(in_flight)),
            posix_rename: version.extensions.contains_key("posix-rename@openssh.com"),
            _permit: permit,
        })
    }

    pub(crate) async fn stat(&self, path: &str) -> Result<Option<FileAttributes>> {
        match self.raw.stat(path).await {
            Ok(attrs) => Ok(Some(attrs.attrs)),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(None),
            Err(e) => Err(sftp_err(format!("stat {path}"), e)),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        if self.posix_rename {
            let mut data = Vec::with_capacity(8 + from.len() + to.len());
            for s in [from, to] {
                data.extend_from_slice(&(s.len() as u32).to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            let reply = self
                .raw
                .extended("posix-rename@openssh.com", data)
                .await
                .map_err(|e| sftp_err(format!("rename to {to}"), e))?;
            match reply {
                Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
                Packet::Status(s) => Err(sftp_err(format!("rename to {to}"), SftpError::Status(s))),
                _ => Err(sftp_err(
                    format!("rename to {to}"),
                    SftpError::UnexpectedPacket,
                )),
            }
        } else {
            // Plain SFTP rename refuses an existing target: remove it first. The target is briefly absent,
            // never truncated.
            let _ = self.raw.remove(to).await;
            self.raw
                .rename(from, to)
                .await
                .map(|_| ())
                .map_err(|e| sftp_err(format!("rename to {to}"), e))
        }
    }

    /// The entries of the remote directory `dir`, as the server lists them (`.` and `..` included).
    pub(crate) async fn read_dir(&self, dir: &str) -> Result<Vec<russh_sftp::protocol::File>> {
        let handle = self
            .raw
            .opendir(dir)
            .await
            .map_err(|e| sftp_err(format!("list {dir}"), e))?
            .handle;
        let mut cleanup = RemoteCleanup {
            raw: self.raw.clone(),
            handle: Some(handle.clone()),
            temp: None,
        };
        let mut names = Vec::new();
        loop {
            match self.raw.readdir(&handle).await {
                Ok(name) => names.extend(name.files),
                Err(e) if is_status(&e, StatusCode::Eof) => break,
                Err(e) => return Err(sftp_err(format!("list {dir}"), e)),
            }
        }
        cleanup.handle = None;
        let _ = self.raw.close(handle).await;
        Ok(names)
    }

    async fn read_dir_at(&self, root: &str, rel: &str) -> Result<Vec<russh_sftp::protocol::File>> {
        self.read_dir(&join_remote(root, rel)).await
    }

    /// Every entry under the remote directory `root`, parents before children: the directories of one
    /// depth are listed together. Links are followed or kept as `links` says.
    pub(crate) async fn walk(
        &self,
        root: &str,
        links: Links,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut level = vec![String::new()];
        while !level.is_empty() {
            let dirs = std::mem::take(&mut level);
            let mut listings = Vec::with_capacity(dirs.len());
            let mut running = FuturesOrdered::new();
            let mut next = 0;
            loop {
                while running.len() < REQUESTS_IN_FLIGHT / 4 && next < dirs.len() {
                    running.push_back(self.read_dir_at(root, &dirs[next]));
                    next += 1;
                }
                match running.next().await {
                    Some(names) => listings.push((dirs[listings.len()].clone(), names?)),
                    None => break,
                }
            }
            for (rel, mut names) in listings {
                let dir = join_remote(root, &rel);
                names.sort_by(|a, b| a.filename.cmp(&b.filename));
                for file in names {
                    // Every listing has these two; they are not entries to copy.
                    if file.filename == "." || file.filename == ".." {
                        continue;
                    }
                    let name = entry_name(&dir, &file.filename)?;
                    let child = if rel.is_empty() {
                        name.to_string()
                    } else {
                        format!("{rel}/{name}")
                    };
                    let path = join_remote(root, &child);
                    let mut attrs = file.attrs;
                    let mut mode = attrs.permissions.unwrap_or(0);
                    let mut link = None;
                    if mode & S_IFMT == S_IFLNK {
                        if links == Links::Keep {
                            let target = self
                                .raw
                                .readlink(&path)
                                .await
                                .map_err(|e| sftp_err(format!("read the link {path}"), e))?;
                            link = target.files.into_iter().next().map(|f| f.filename);
                        } else {
                            // Follow links to files, as scp does; links to directories could loop.
                            match self.stat(&path).await? {
                                Some(target)
                                    if target.permissions.unwrap_or(0) & S_IFMT == S_IFREG =>
                                {
                                    attrs = target;
                                    mode = attrs.permissions.unwrap_or(0);
                                }
                                _ => {
                                    reporter.report(Event::Warning {
                                        message: format!(
                                            "skipped {path}: a link to a directory or to nothing (`--links keep` copies links)"
                                        ),
                                    });
                                    continue;
                                }
                            }
                        }
                    }
                    let kind = match mode & S_IFMT {
                        _ if link.is_some() => Kind::Link,
                        S_IFDIR => Kind::Dir,
                        S_IFREG => Kind::File,
                        _ => {
                            reporter.report(Event::Warning {
                                message: format!("skipped {path}: not a regular file or directory"),
                            });
                            continue;
                        }
                    };
                    if kind == Kind::Dir {
                        level.push(child.clone());
                    }
                    items.push(Item {
                        rel: child,
                        kind,
                        size: if kind == Kind::File {
                            attrs.size.unwrap_or(0)
                        } else {
                            0
                        },
                        mode: mode & COPIED_MODE,
                        atime: attrs.atime.unwrap_or(0),
                        mtime: attrs.mtime.unwrap_or(0),
                        link,
                    });
                }
            }
        }
        Ok(items)
    }

    /// Create the directory `path` (mode 0700 until its own mode is set), unless it is one already.
    async fn make_dir(&self, path: &str) -> Result<()> {
        let writable = FileAttributes {
            permissions: Some(0o700),
            ..Default::default()
        };
        if let Err(e) = self.raw.mkdir(path, writable).await {
            match self.stat(path).await? {
                Some(a) if a.permissions.unwrap_or(0) & S_IFMT == S_IFDIR => {}
                _ => return Err(sftp_err(format!("create directory {path}"), e)),
            }
        }
        Ok(())
    }

    async fn set_attrs(&self, path: &str, item: &Item) -> Result<()> {
        let attrs = FileAttributes {
            permissions: Some(item.mode),
            atime: Some(item.atime),
            mtime: Some(item.mtime),
            ..Default::default()
        };
        self.raw
            .setstat(path, attrs)
            .await
            .map(|_| ())
            .map_err(|e| sftp_err(format!("set mode and times of {path}"), e))
    }

    /// Upload the entries `items` of the local tree `local_root` to the remote directory `target` (the
    /// root itself is the item "", if it is among them): directories level by level, then files many at a
    /// time, then links, then the directories' modes and times, deepest first. Returns files and bytes.
    pub(crate) async fn upload_items(
        &self,
        local_root: &Path,
        target: &str,
        items: &[Item],
        progress: &Progress<'_>,
    ) -> Result<(u64, u64)> {
        let levels = dir_levels(items);
        for level in &levels {
            each_limited!(level, REQUESTS_IN_FLIGHT, |dir| self
                .make_dir_at(target, dir));
        }
        let files: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::File).collect();
        let (mut count, mut bytes) = (0u64, 0u64);
        {
            let mut running = FuturesUnordered::new();
            let mut next = 0;
            loop {
                while running.len() < FILES_IN_FLIGHT && next < files.len() {
                    running.push(self.upload_file_at(local_root, target, files[next], progress));
                    next += 1;
                }
                match running.next().await {
                    Some(sent) => {
                        bytes += sent?;
                        count += 1;
                    }
                    None => break,
                }
            }
        }
        let links: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::Link).collect();
        each_limited!(&links, REQUESTS_IN_FLIGHT, |link| self
            .make_link(target, link));
        finish_progress(progress);
        // Directories last, deepest first: writing into a directory changes its modification time.
        for level in levels.iter().rev() {
            each_limited!(level, REQUESTS_IN_FLIGHT, |dir| self
                .set_attrs_at(target, dir));
        }
        Ok((count, bytes))
    }

    async fn upload_file_at(
        &self,
        local_root: &Path,
        target: &str,
        file: &Item,
        progress: &Progress<'_>,
    ) -> Result<u64> {
        let from = local_root.join(&file.rel);
        let to = join_remote(target, &file.rel);
        self.upload_file(&from, &to, file, progress).await
    }

    async fn set_attrs_at(&self, root: &str, item: &Item) -> Result<()> {
        self.set_attrs(&join_remote(root, &item.rel), item).await
    }

    /// Create the link `link` under `target`: at a temporary name, then renamed into place.
    async fn make_link(&self, target: &str, link: &Item) -> Result<()> {
        let path = join_remote(target, &link.rel);
        let (dir, name) = split_remote(&path);
        let temp = join_remote(dir, &temp_name(name));
        // OpenSSH's sftp-server takes SSH_FXP_SYMLINK's two paths in the reverse of the draft's order:
        // the link's target first, then where the link goes.
        self.raw
            .symlink(link.link.clone().unwrap_or_default(), temp.clone())
            .await
            .map_err(|e| sftp_err(format!("create the link {path}"), e))?;
        if let Err(e) = self.rename(&temp, &path).await {
            let _ = self.raw.remove(temp).await;
            return Err(e);
        }
        Ok(())
    }

    async fn make_dir_at(&self, target: &str, dir: &Item) -> Result<()> {
        self.make_dir(&join_remote(target, &dir.rel)).await
    }

    /// Download the entries `items` of the remote tree `remote_root` into the local directory `target`
    /// (the root is the item "", if it is among them), as [`Sftp::upload_items`] does the other way.
    pub(crate) async fn download_items(
        &self,
        remote_root: &str,
        target: &Path,
        items: &[Item],
        progress: &Progress<'_>,
    ) -> Result<(u64, u64)> {
        let local_path = |rel: &str| {
            if rel.is_empty() {
                Ok(target.to_path_buf())
            } else {
                local_under(target, rel)
            }
        };
        for dir in items.iter().filter(|i| i.kind == Kind::Dir) {
            let path = local_path(&dir.rel)?;
            if !path.is_dir() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| Error::io(format!("create directory {}", path.display()), e))?;
            }
        }
        let files: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::File).collect();
        let (mut count, mut bytes) = (0u64, 0u64);
        {
            let mut running = FuturesUnordered::new();
            let mut next = 0;
            loop {
                while running.len() < FILES_IN_FLIGHT && next < files.len() {
                    running.push(self.download_file_at(remote_root, target, files[next], progress));
                    next += 1;
                }
                match running.next().await {
                    Some(received) => {
                        bytes += received?;
                        count += 1;
                    }
                    None => break,
                }
            }
        }
        // Links last, so nothing is ever written through one.
        for link in items.iter().filter(|i| i.kind == Kind::Link) {
            let path = local_path(&link.rel)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let temp = path.with_file_name(temp_name(&name));
            std::os::unix::fs::symlink(link.link.as_deref().unwrap_or(""), &temp)
                .and_then(|()| std::fs::rename(&temp, &path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&temp);
                    Error::io(format!("create the link {}", path.display()), e)
                })?;
        }
        finish_progress(progress);
        let mut dirs: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::Dir).collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(if d.rel.is_empty() { 0 } else { d.depth() + 1 }));
        for dir in dirs {
            let path = local_path(&dir.rel)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(dir.mode))
                .map_err(|e| Error::io(format!("set the mode of {}", path.display()), e))?;
            std::fs::File::open(&path)
                .and_then(|f| f.set_times(file_times(dir)))
                .map_err(|e| Error::io(format!("set the times of {}", path.display()), e))?;
        }
        Ok((count, bytes))
    }

    async fn download_file_at(
        &self,
        remote_root: &str,
        target: &Path,
        file: &Item,
        progress: &Progress<'_>,
    ) -> Result<u64> {
        let from = join_remote(remote_root, &file.rel);
        let to = local_under(target, &file.rel)?;
        self.download_file(&from, &to, file, progress).await
    }

    async fn remove_at(&self, root: &str, item: &Item) -> Result<()> {
        let path = join_remote(root, &item.rel);
        let removed = if item.kind == Kind::Dir {
            self.raw.rmdir(path.clone()).await
        } else {
            self.raw.remove(path.clone()).await
        };
        removed
            .map(|_| ())
            .map_err(|e| sftp_err(format!("remove {path}"), e))
    }

    /// Remove the entries `items` under the remote directory `root`: files and links first, then
    /// directories, deepest first (each must be empty by then).
    pub(crate) async fn remove_items(&self, root: &str, items: &[Item]) -> Result<()> {
        let others: Vec<&Item> = items.iter().filter(|i| i.kind != Kind::Dir).collect();
        each_limited!(&others, REQUESTS_IN_FLIGHT, |item| self
            .remove_at(root, item));
        for level in dir_levels(items).iter().rev() {
            each_limited!(level, REQUESTS_IN_FLIGHT, |dir| self.remove_at(root, dir));
        }
        Ok(())
    }

    /// Set the modes and times of the remote entries `items` under `root` as they say (directories
    /// deepest first).
    pub(crate) async fn set_items_attrs(&self, root: &str, items: &[Item]) -> Result<()> {
        let files: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::File).collect();
        each_limited!(&files, REQUESTS_IN_FLIGHT, |item| self
            .set_attrs_at(root, item));
        for level in dir_levels(items).iter().rev() {
            each_limited!(level, REQUESTS_IN_FLIGHT, |dir| self
                .set_attrs_at(root, dir));
        }
        Ok(())
    }

    /// The whole content of a small remote file.
    pub(crate) async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let handle = self
            .raw
            .open(path, OpenFlags::READ, FileAttributes::default())
            .await
            .map_err(|e| sftp_err(format!("open {path}"), e))?
            .handle;
        let mut data = Vec::new();
        let result = loop {
            match self
                .raw
                .read(&handle, data.len() as u64, self.chunk as u32)
                .await
            {
                Ok(d) if !d.data.is_empty() => data.extend_from_slice(&d.data),
                Ok(_) => break Ok(()),
                Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                Err(e) => break Err(sftp_err(format!("read {path}"), e)),
            }
        };
        let _ = self.raw.close(handle).await;
        result.map(|()| data)
    }

    /// Upload one file: to a temporary name with writes in flight (a small file's one write, its mode
    /// and times and its close go out together), then renamed into place once every write is
    /// acknowledged.
    async fn upload_file(
        &self,
        local: &Path,
        remote: &str,
        item: &Item,
        progress: &Progress<'_>,
    ) -> Result<u64> {
        let (dir, name) = split_remote(remote);
        let temp = join_remote(dir, &temp_name(name));
        let read_err = |e| Error::io(format!("read {}", local.display()), e);
        // A small file is read whole here (a page-cache read of at most one chunk); a large one streams.
        let (mut file, mut small) = if item.size <= self.chunk {
            (None, Some(std::fs::read(local).map_err(read_err)?))
        } else {
            let file = tokio::fs::File::open(local)
                .await
                .map_err(|e| Error::io(format!("open {}", local.display()), e))?;
            (Some(file), None)
        };
        let create = FileAttributes {
            permissions: Some(0o600),
            ..Default::default()
        };
        let handle = self
            .raw
            .open(
                &temp,
                OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE | OpenFlags::EXCLUDE,
                create,
            )
            .await
            .map_err(|e| sftp_err(format!("create {temp}"), e))?
            .handle;
        let mut cleanup = RemoteCleanup {
            raw: self.raw.clone(),
            handle: Some(handle.clone()),
            temp: Some(temp.clone()),
        };

        let chunk = self.chunk as usize;
        let mut writes = FuturesUnordered::new();
        let (mut offset, mut eof, mut sent) = (0u64, false, 0u64);
        loop {
            while !eof && writes.len() < self.in_flight {
                let permit = if writes.is_empty() {
                    self.budget
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| closed())?
                } else {
                    match self.budget.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => break,
                    }
                };
                let buf = match (small.take(), file.as_mut()) {
                    (Some(data), _) => {
                        eof = true;
                        data
                    }
                    (None, Some(file)) => {
                        let mut buf = vec![0u8; chunk];
                        let n = read_full(file, &mut buf).await.map_err(read_err)?;
                        if n < chunk {
                            eof = true;
                        }
                        buf.truncate(n);
                        buf
                    }
                    (None, None) => {
                        eof = true;
                        Vec::new()
                    }
                };
                if buf.is_empty() {
                    break;
                }
                let n = buf.len() as u64;
                let (raw, handle, at) = (&self.raw, handle.clone(), offset);
                writes.push(async move {
                    let written = raw.write(handle, at, buf).await.map(|_| n);
                    drop(permit);
                    written
                });
                offset += n;
            }
            if eof {
                break;
            }
            match writes.next().await {
                Some(written) => {
                    let n = written.map_err(|e| sftp_err(format!("write {temp}"), e))?;
                    sent += n;
                    add_progress(progress, n);
                }
                None => break,
            }
        }
        let attrs = FileAttributes {
            permissions: Some(item.mode),
            atime: Some(item.atime),
            mtime: Some(item.mtime),
            ..Default::default()
        };
        // The last writes, the mode and times, and the close travel together; the rename waits for all.
        let rest = async {
            while let Some(written) = writes.next().await {
                let n = written.map_err(|e| sftp_err(format!("write {temp}"), e))?;
                sent += n;
                add_progress(progress, n);
            }
            Ok::<_, Error>(())
        };
        let set = self.raw.fsetstat(&handle, attrs);
        let close = self.raw.close(&handle);
        let (written, set, close) = tokio::join!(rest, set, close);
        cleanup.handle = None;
        written?;
        set.map_err(|e| sftp_err(format!("set mode and times of {temp}"), e))?;
        close.map_err(|e| sftp_err(format!("close {temp}"), e))?;
        self.rename(&temp, remote).await?;
        cleanup.temp = None;
        Ok(sent)
    }

    /// Download one file: reads in flight, written in order to a temporary file, then mode, times, rename.
    async fn download_file(
        &self,
        remote: &str,
        local: &Path,
        item: &Item,
        progress: &Progress<'_>,
    ) -> Result<u64> {
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "download".into());
        let temp = local.with_file_name(temp_name(&name));
        let std_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
        let mut local_temp = LocalTemp(Some(temp.clone()));
        let mut file = tokio::fs::File::from_std(std_file);

        let handle = self
            .raw
            .open(remote, OpenFlags::READ, FileAttributes::default())
            .await
            .map_err(|e| sftp_err(format!("open {remote}"), e))?
            .handle;
        let mut cleanup = RemoteCleanup {
            raw: self.raw.clone(),
            handle: Some(handle.clone()),
            temp: None,
        };

        let write_err = |e| Error::io(format!("write {}", temp.display()), e);
        let mut reads = FuturesOrdered::new();
        let (mut next, mut received, mut at_eof) = (0u64, 0u64, false);
        loop {
            while !at_eof && reads.len() < self.in_flight && next < item.size {
                let permit = if reads.is_empty() {
                    self.budget
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| closed())?
                } else {
                    match self.budget.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => break,
                    }
                };
                let len = self.chunk.min(item.size - next) as u32;
                let (raw, handle, at) = (&self.raw, handle.clone(), next);
                reads.push_back(async move {
                    let data = raw.read(handle, at, len).await;
                    drop(permit);
                    (at, len, data)
                });
                next += len as u64;
            }
            let Some((at, len, result)) = reads.next().await else {
                break;
            };
            let mut pos = at;
            let mut result = result;
            // A short read is legal: ask for the rest of this chunk before moving on.
            loop {
                match result {
                    Ok(data) if !data.data.is_empty() => {
                        file.write_all(&data.data).await.map_err(write_err)?;
                        let n = data.data.len() as u64;
                        pos += n;
                        received += n;
                        add_progress(progress, n);
                    }
                    Ok(_) => at_eof = true,
                    Err(e) if is_status(&e, StatusCode::Eof) => at_eof = true,
                    Err(e) => return Err(sftp_err(format!("read {remote}"), e)),
                }
                if at_eof || pos >= at + len as u64 {
                    break;
                }
                result = self
                    .raw
                    .read(&handle, pos, (at + len as u64 - pos) as u32)
                    .await;
            }
            if at_eof {
                // The file shrank while we read it: what it now holds has been copied.
                break;
            }
        }
        drop(reads);
        cleanup.handle = None;
        let _ = self.raw.close(&handle).await;

        file.flush().await.map_err(write_err)?;
        let std_file = file.into_std().await;
        std_file
            .set_permissions(std::fs::Permissions::from_mode(item.mode))
            .map_err(|e| Error::io(format!("set the mode of {}", temp.display()), e))?;
        std_file
            .set_times(file_times(item))
            .map_err(|e| Error::io(format!("set the times of {}", temp.display()), e))?;
        drop(std_file);
        std::fs::rename(&temp, local)
            .map_err(|e| Error::io(format!("rename {} into place", local.display()), e))?;
        local_temp.0 = None;
        Ok(received)
    }
}

fn file_times(item: &Item) -> FileTimes {
    FileTimes::new()
        .set_accessed(UNIX_EPOCH + Duration::from_secs(item.atime.into()))
        .set_modified(UNIX_EPOCH + Duration::from_secs(item.mtime.into()))
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// The names in the remote directory `path` (links to directories count), without `.` and `..`; `None`
/// when it does not exist or is not a directory.
pub(crate) async fn list_dir(session: &SshSession, path: &str) -> Result<Option<Vec<String>>> {
    let sftp = Sftp::open(session).await?;
    let path = normalize_remote(path);
    match sftp.stat(&path).await? {
        Some(attrs) if attrs.permissions.unwrap_or(0) & S_IFMT == S_IFDIR => {}
        _ => return Ok(None),
    }
    let names = sftp.read_dir(&path).await?;
    Ok(Some(
        names
            .into_iter()
            .map(|f| f.filename)
            .filter(|n| n != "." && n != "..")
            .collect(),
    ))
}

/// Run one copy.
pub(crate) async fn copy(
    session: &SshSession,
    direction: CopyDirection,
    options: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<TransferStats> {
    let started = Instant::now();
    let sftp = Sftp::open(session).await?;
    crate::profile::mark("sftp open");
    let (files, bytes) = match direction {
        CopyDirection::Upload { local, remote } => {
            upload(session, &sftp, &local, &remote, options, reporter).await?
        }
        CopyDirection::Download { remote, local } => {
            download(session, &sftp, &remote, &local, options, reporter).await?
        }
    };
    Ok(TransferStats {
        files,
        bytes,
        elapsed: started.elapsed(),
    })
}

async fn upload(
    session: &SshSession,
    sftp: &Sftp,
    local: &Path,
    remote: &str,
    options: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<(u64, u64)> {
    let meta =
        std::fs::metadata(local).map_err(|e| Error::io(format!("read {}", local.display()), e))?;
    if !(meta.is_dir() || meta.is_file()) {
        return Err(Error::Remote {
            message: format!("{} is not a regular file or directory", local.display()),
            hint: None,
        });
    }
    let remote = normalize_remote(remote);
    let target = match sftp.stat(&remote).await? {
        Some(attrs) if attrs.permissions.unwrap_or(0) & S_IFMT == S_IFDIR => {
            let name = std::fs::canonicalize(local)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .ok_or_else(|| Error::Remote {
                    message: format!("{} has no file name to copy it under", local.display()),
                    hint: Some("name the target path in full".into()),
                })?;
            join_remote(&remote, &name)
        }
        _ => remote,
    };
    let root = local_item(String::new(), &meta);
    if meta.is_file() {
        let progress = Mutex::new(ByteProgress::new(
            reporter,
            format!("upload {}", local.display()),
            Some(root.size),
        ));
        let sent = sftp.upload_file(local, &target, &root, &progress).await?;
        finish_progress(&progress);
        return Ok((1, sent));
    }
    if let Some(existing) = sftp.stat(&target).await?
        && existing.permissions.unwrap_or(0) & S_IFMT != S_IFDIR
    {
        return Err(Error::Remote {
            message: format!(
                "cannot copy directory {} onto the file {target}",
                local.display()
            ),
            hint: None,
        });
    }
    crate::profile::mark("target checked");
    let items = walk_local(local, options.links, reporter)?;
    crate::profile::mark("tree walked");
    if !options.file_by_file
        && let Some(done) = upload_tar(session, local, &target, &root, &items, reporter).await?
    {
        return Ok(done);
    }
    let progress = Mutex::new(ByteProgress::new(
        reporter,
        format!("upload {}", local.display()),
        Some(items.iter().map(|i| i.size).sum()),
    ));
    let mut all = Vec::with_capacity(items.len() + 1);
    all.push(root);
    all.extend(items);
    sftp.upload_items(local, &target, &all, &progress).await
}

/// Send `items` (relative to `local`, whose own entry is `root`) as one tar stream to become the remote
/// directory `target` (merged into it when it exists). `None` when the workspace has no tar.
pub(crate) async fn upload_tar(
    session: &SshSession,
    local: &Path,
    target: &str,
    root: &Item,
    items: &[Item],
    reporter: &dyn Reporter,
) -> Result<Option<(u64, u64)>> {
    let files = items.iter().filter(|i| i.kind == Kind::File).count() as u64;
    let total: u64 = items.iter().map(|i| i.size).sum();
    // The progress counts the archive's bytes, headers and padding included: its total is theirs.
    let size = archive::packed_size("root", root, items);
    let (reader, writer) = tokio::io::duplex(4 * STREAM_CHUNK);
    let (source, root_item, entries) = (local.to_path_buf(), root.clone(), items.to_vec());
    let packing = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let out = std::io::BufWriter::with_capacity(
            STREAM_CHUNK,
            tokio_util::io::SyncIoBridge::new(writer),
        );
        let out = archive::pack(out, &source, "root", &root_item, &entries, |_| {})?;
        let mut bridge = out.into_inner().map_err(|e| e.into_error())?;
        std::io::Write::flush(&mut bridge)?;
        bridge.shutdown()
    });
    let request = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            RECEIVE.into(),
            "gpulab-cp".into(),
            target.into(),
            "root".into(),
            "exact".into(),
            root.mtime.to_string(),
        ],
        ..Default::default()
    };
    let counted = crate::remote::api_server::ProgressReader::new(
        reader,
        format!("upload {}", local.display()),
        Some(size),
        reporter,
    );
    let mut stderr = Vec::new();
    let streams = ExecStreams {
        stdin: Some(Box::pin(counted)),
        stdout: Box::pin(tokio::io::sink()),
        stderr: Box::pin(&mut stderr),
    };
    let status = session.exec_streaming(request, streams).await;
    crate::profile::mark("exec ended");
    let packed = packing.await.map_err(|e| Error::Remote {
        message: format!("tar: {e}"),
        hint: None,
    })?;
    match status? {
        ExitStatus::Code(NO_TAR) | ExitStatus::Code(127) => {
            reporter.report(Event::Warning {
                message: "the workspace has no tar: copying file by file".into(),
            });
            Ok(None)
        }
        status if status.success() => {
            packed.map_err(|e| Error::io(format!("archive {}", local.display()), e))?;
            Ok(Some((files, total)))
        }
        _ => Err(Error::Remote {
            message: format!(
                "copy to {target} failed: {}",
                String::from_utf8_lossy(&stderr).trim()
            ),
            hint: Some("the workspace user needs write access to the target directory".into()),
        }),
    }
}

async fn download(
    session: &SshSession,
    sftp: &Sftp,
    remote: &str,
    local: &Path,
    options: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<(u64, u64)> {
    let remote = normalize_remote(remote);
    let attrs = sftp.stat(&remote).await?.ok_or_else(|| Error::Remote {
        message: format!("{remote}: no such file or directory in the workspace"),
        hint: None,
    })?;
    let mode = attrs.permissions.unwrap_or(0);
    let kind = match mode & S_IFMT {
        S_IFDIR => Kind::Dir,
        S_IFREG => Kind::File,
        _ => {
            return Err(Error::Remote {
                message: format!("{remote} is not a regular file or directory"),
                hint: None,
            });
        }
    };
    let target = if local.is_dir() {
        let name = match split_remote(&remote).1 {
            "." | ".." | "" => sftp
                .raw
                .realpath(&remote)
                .await
                .ok()
                .and_then(|n| n.files.into_iter().next())
                .map(|f| split_remote(&f.filename).1.to_string())
                .unwrap_or_default(),
            name => name.to_string(),
        };
        if name.is_empty() || name == "/" {
            return Err(Error::Remote {
                message: format!("{remote} has no name to copy it under"),
                hint: Some("name the local target path in full".into()),
            });
        }
        local.join(entry_name(&remote, &name)?)
    } else {
        local.to_path_buf()
    };
    let root = Item {
        rel: String::new(),
        kind,
        size: if kind == Kind::File {
            attrs.size.unwrap_or(0)
        } else {
            0
        },
        mode: mode & COPIED_MODE,
        atime: attrs.atime.unwrap_or(0),
        mtime: attrs.mtime.unwrap_or(0),
        link: None,
    };
    if kind == Kind::File {
        let progress = Mutex::new(ByteProgress::new(
            reporter,
            format!("download {remote}"),
            Some(root.size),
        ));
        let received = sftp
            .download_file(&remote, &target, &root, &progress)
            .await?;
        finish_progress(&progress);
        return Ok((1, received));
    }
    if target.exists() && !target.is_dir() {
        return Err(Error::Remote {
            message: format!(
                "cannot copy directory {remote} onto the file {}",
                target.display()
            ),
            hint: None,
        });
    }
    crate::profile::mark("source checked");
    if !options.file_by_file
        && let Some(done) = download_tar(session, &remote, &target, options, reporter).await?
    {
        return Ok(done);
    }
    let items = sftp.walk(&remote, options.links, reporter).await?;
    let progress = Mutex::new(ByteProgress::new(
        reporter,
        format!("download {remote}"),
        Some(items.iter().map(|i| i.size).sum()),
    ));
    let mut all = Vec::with_capacity(items.len() + 1);
    all.push(root);
    all.extend(items);
    sftp.download_items(&remote, &target, &all, &progress).await
}

/// Receive the remote directory `remote` as one tar stream into a private staging directory beside
/// `target`, then move it into place. `None` when the workspace cannot run tar (no tar, or no commands).
async fn download_tar(
    session: &SshSession,
    remote: &str,
    target: &Path,
    options: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Option<(u64, u64)>> {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = Staging::new(parent)?;
    let (reader, writer) = tokio::io::duplex(4 * STREAM_CHUNK);
    let into = staging.path().to_path_buf();
    let keep_links = options.links == Links::Keep;
    let unpacking = tokio::task::spawn_blocking(move || {
        let mut skipped = Vec::new();
        let input = std::io::BufReader::with_capacity(
            STREAM_CHUNK,
            tokio_util::io::SyncIoBridge::new(reader),
        );
        let unpacked = archive::unpack(input, &into, keep_links, |s| skipped.push(s), |_| {});
        (unpacked, skipped)
    });
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        SEND.into(),
        "gpulab-cp".into(),
        remote.into(),
    ];
    if !keep_links {
        argv.push("-h".into());
    }
    let request = ExecRequest {
        argv,
        ..Default::default()
    };
    let mut stderr = Vec::new();
    let received = crate::remote::api_server::ProgressWriter::new(
        writer,
        format!("download {remote}"),
        reporter,
    );
    let streams = ExecStreams {
        stdin: None,
        stdout: Box::pin(received),
        stderr: Box::pin(&mut stderr),
    };
    let status = session.exec_streaming(request, streams).await;
    crate::profile::mark("exec ended");
    let (unpacked, skipped) = unpacking.await.map_err(|e| Error::Remote {
        message: format!("tar: {e}"),
        hint: None,
    })?;
    let status = match status {
        Ok(status) => status,
        // A name refused while unpacking stops the stream too: that refusal is the news.
        Err(e) => {
            return match unpacked {
                Err(refused @ Error::Remote { .. }) => Err(refused),
                // A server that runs no commands at all (SFTP only): copy file by file.
                Ok(done) if done == archive::Unpacked::default() => Ok(None),
                _ => Err(e),
            };
        }
    };
    match status {
        ExitStatus::Code(NO_TAR) | ExitStatus::Code(127) => {
            reporter.report(Event::Warning {
                message: "the workspace has no tar: copying file by file".into(),
            });
            return Ok(None);
        }
        status if !status.success() => {
            return Err(Error::Remote {
                message: format!(
                    "copy from {remote} failed: {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
                hint: None,
            });
        }
        _ => {}
    }
    let unpacked = unpacked?;
    for message in skipped {
        reporter.report(Event::Warning { message });
    }
    archive::move_into(staging.path(), target)?;
    drop(staging);
    Ok(Some((unpacked.files, unpacked.bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_normalize_like_sftp() {
        assert_eq!(normalize_remote("~"), ".");
        assert_eq!(normalize_remote("~/data/"), "data");
        assert_eq!(normalize_remote("/"), "/");
        assert_eq!(normalize_remote("/workspace/"), "/workspace");
        assert_eq!(split_remote("/a"), ("/", "a"));
        assert_eq!(split_remote("a/b/c"), ("a/b", "c"));
        assert_eq!(split_remote("c"), (".", "c"));
        assert_eq!(join_remote("/", "a"), "/a");
        assert_eq!(join_remote("/w", ""), "/w");
    }

    #[test]
    fn directories_come_in_levels_root_first() {
        let item = |rel: &str| Item {
            rel: rel.into(),
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            atime: 0,
            mtime: 0,
            link: None,
        };
        let items = [item(""), item("a"), item("a/b"), item("c"), item("a/b/c")];
        let levels: Vec<Vec<&str>> = dir_levels(&items)
            .iter()
            .map(|l| l.iter().map(|i| i.rel.as_str()).collect())
            .collect();
        assert_eq!(
            levels,
            [vec![""], vec!["a", "c"], vec!["a/b"], vec!["a/b/c"]]
        );
    }
}
