//! File transfer over SFTP: files and directories both ways, modes and modification times kept, progress in
//! bytes, many requests in flight, and atomic: each file is written under a temporary name in its target
//! directory and renamed into place once complete, so a failed or interrupted copy never leaves a truncated
//! file at the target name.

use std::collections::VecDeque;
use std::fs::FileTimes;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::SshSession;
use crate::events::{ByteProgress, Event, Reporter};
use crate::remote::{CopyDirection, TransferStats};
use crate::{Error, Result};

/// The largest read or write OpenSSH's sftp-server takes (its 256 KiB message limit less headroom).
const MAX_CHUNK: u64 = 255 * 1024;
/// What every SFTP server must take (draft-ietf-secsh-filexfer-02).
const SAFE_CHUNK: u64 = 32 * 1024;
/// A request that gets no answer in this long fails the copy.
const REQUEST_TIMEOUT_SECS: u64 = 120;

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

/// A unique temporary name next to `name`.
fn temp_name(name: &str) -> String {
    // Unpredictable, so nobody can plant a file or link there first; a counter keeps names apart even
    // if the random source fails.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        random = nanos.to_le_bytes();
    }
    format!(
        ".{name}.gpulab-{:016x}-{}.part",
        u64::from_le_bytes(random),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The permission bits gpulab copies: read, write and execute for owner, group and others. Set-user-ID,
/// set-group-ID and sticky bits from the other side are dropped.
const COPIED_MODE: u32 = 0o777;

/// A name the server listed in a directory, checked before it is joined onto a local path: one path
/// component, not `.` or `..`, no `/` and no NUL. A server that answers otherwise (a compromised
/// workspace) must not make gpulab write outside the target.
fn entry_name<'a>(dir: &str, name: &'a str) -> Result<&'a str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Remote {
            message: format!(
                "the workspace listed an entry {name:?} in {dir}, which is not a file name; refusing to copy it"
            ),
            hint: Some(
                "a working sshd never lists such names: the workspace may be compromised".into(),
            ),
        });
    }
    Ok(name)
}

/// `target` joined with `rel` (names from [`entry_name`], joined by `/`), checked to stay under
/// `target`: only plain components.
fn local_under(target: &Path, rel: &str) -> Result<PathBuf> {
    let rel = Path::new(rel);
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(Error::Remote {
            message: format!(
                "{} would land outside {}; refusing to write it",
                rel.display(),
                target.display()
            ),
            hint: Some(
                "a working sshd never lists such names: the workspace may be compromised".into(),
            ),
        });
    }
    Ok(target.join(rel))
}

/// A remote path as sftp-server wants it: `~` and `~/…` are relative to the home directory, where
/// sftp-server starts.
fn normalize_remote(path: &str) -> String {
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

fn join_remote(dir: &str, name: &str) -> String {
    if name.is_empty() {
        dir.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn split_remote(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    }
}

/// What kind of thing one entry of a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// One file or directory to copy, relative to the copy's root ("" is the root itself).
#[derive(Debug, Clone)]
struct Item {
    rel: String,
    kind: Kind,
    size: u64,
    mode: u32,
    atime: u32,
    mtime: u32,
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

/// One SFTP session on its own channel, for one copy.
struct Sftp {
    raw: Arc<RawSftpSession>,
    chunk: u64,
    in_flight: usize,
    posix_rename: bool,
    _permit: OwnedSemaphorePermit,
}

impl Sftp {
    async fn open(session: &SshSession) -> Result<Sftp> {
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
        Ok(Sftp {
            raw: Arc::new(raw),
            chunk,
            in_flight: session.tuning.sftp_requests_in_flight.max(1),
            posix_rename: version.extensions.contains_key("posix-rename@openssh.com"),
            _permit: permit,
        })
    }

    async fn stat(&self, path: &str) -> Result<Option<FileAttributes>> {
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
    async fn read_dir(&self, dir: &str) -> Result<Vec<russh_sftp::protocol::File>> {
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

    /// Every entry under the remote directory `root`, parents before children.
    async fn walk(&self, root: &str, reporter: &dyn Reporter) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut queue = VecDeque::from([String::new()]);
        while let Some(rel) = queue.pop_front() {
            let dir = join_remote(root, &rel);
            let mut names = self.read_dir(&dir).await?;
            names.sort_by(|a, b| a.filename.cmp(&b.filename));
            for file in names {
                // Every listing has these two; they are not entries to copy.
                if file.filename == "." || file.filename == ".." {
                    continue;
                }
                let name = entry_name(&dir, &file.filename)?;
                let child = join_remote(&rel, name).trim_start_matches('/').to_string();
                let mut attrs = file.attrs;
                let mut mode = attrs.permissions.unwrap_or(0);
                if mode & S_IFMT == S_IFLNK {
                    // Follow links to files, as scp does; links to directories could loop.
                    let path = join_remote(root, &child);
                    match self.stat(&path).await? {
                        Some(target) if target.permissions.unwrap_or(0) & S_IFMT == S_IFREG => {
                            attrs = target;
                            mode = attrs.permissions.unwrap_or(0);
                        }
                        _ => {
                            reporter.report(Event::Warning {
                                message: format!(
                                    "skipped {path}: a link to a directory or to nothing"
                                ),
                            });
                            continue;
                        }
                    }
                }
                let kind = match mode & S_IFMT {
                    S_IFDIR => Kind::Dir,
                    S_IFREG => Kind::File,
                    _ => {
                        reporter.report(Event::Warning {
                            message: format!(
                                "skipped {}: not a regular file or directory",
                                join_remote(root, &child)
                            ),
                        });
                        continue;
                    }
                };
                if kind == Kind::Dir {
                    queue.push_back(child.clone());
                }
                items.push(Item {
                    rel: child,
                    kind,
                    size: attrs.size.unwrap_or(0),
                    mode: mode & COPIED_MODE,
                    atime: attrs.atime.unwrap_or(0),
                    mtime: attrs.mtime.unwrap_or(0),
                });
            }
        }
        Ok(items)
    }

    /// Upload one file: to a temporary name with writes in flight, then mode and times, then rename.
    async fn upload_file(
        &self,
        local: &Path,
        remote: &str,
        item: &Item,
        progress: &mut ByteProgress<'_>,
    ) -> Result<u64> {
        let (dir, name) = split_remote(remote);
        let temp = join_remote(dir, &temp_name(name));
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(format!("open {}", local.display()), e))?;
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
                let mut buf = vec![0u8; chunk];
                let n = read_full(&mut file, &mut buf)
                    .await
                    .map_err(|e| Error::io(format!("read {}", local.display()), e))?;
                if n < chunk {
                    eof = true;
                }
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let (raw, handle, at) = (&self.raw, handle.clone(), offset);
                writes.push(async move { raw.write(handle, at, buf).await.map(|_| n as u64) });
                offset += n as u64;
            }
            match writes.next().await {
                Some(written) => {
                    let n = written.map_err(|e| sftp_err(format!("write {temp}"), e))?;
                    sent += n;
                    progress.add(n);
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
        self.raw
            .fsetstat(&handle, attrs)
            .await
            .map_err(|e| sftp_err(format!("set mode and times of {temp}"), e))?;
        cleanup.handle = None;
        self.raw
            .close(&handle)
            .await
            .map_err(|e| sftp_err(format!("close {temp}"), e))?;
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
        progress: &mut ByteProgress<'_>,
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
                let len = self.chunk.min(item.size - next) as u32;
                let (raw, handle, at) = (&self.raw, handle.clone(), next);
                reads.push_back(async move { (at, len, raw.read(handle, at, len).await) });
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
                        progress.add(n);
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

fn unix_secs(time: std::io::Result<SystemTime>) -> u32 {
    time.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

fn local_item(rel: String, meta: &std::fs::Metadata) -> Item {
    Item {
        rel,
        kind: if meta.is_dir() { Kind::Dir } else { Kind::File },
        size: if meta.is_dir() { 0 } else { meta.len() },
        mode: meta.permissions().mode() & COPIED_MODE,
        atime: unix_secs(meta.accessed()),
        mtime: unix_secs(meta.modified()),
    }
}

/// Every entry under the local directory `root`, parents before children.
fn walk_local(root: &Path, reporter: &dyn Reporter) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut queue = VecDeque::from([String::new()]);
    while let Some(rel) = queue.pop_front() {
        let dir = root.join(&rel);
        let mut entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                reporter.report(Event::Warning {
                    message: format!("skipped {}: its name is not UTF-8", entry.path().display()),
                });
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let link = entry.file_type().is_ok_and(|t| t.is_symlink());
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            if (link && meta.is_dir()) || !(meta.is_dir() || meta.is_file()) {
                reporter.report(Event::Warning {
                    message: format!(
                        "skipped {}: not a regular file or directory (links to directories are not followed)",
                        path.display()
                    ),
                });
                continue;
            }
            if meta.is_dir() {
                queue.push_back(child.clone());
            }
            items.push(local_item(child, &meta));
        }
    }
    Ok(items)
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
    reporter: &dyn Reporter,
) -> Result<TransferStats> {
    let started = Instant::now();
    let sftp = Sftp::open(session).await?;
    let mut stats = TransferStats::default();
    match direction {
        CopyDirection::Upload { local, remote } => {
            upload(&sftp, &local, &remote, reporter, &mut stats).await?
        }
        CopyDirection::Download { remote, local } => {
            download(&sftp, &remote, &local, reporter, &mut stats).await?
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

async fn upload(
    sftp: &Sftp,
    local: &Path,
    remote: &str,
    reporter: &dyn Reporter,
    stats: &mut TransferStats,
) -> Result<()> {
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
    let mut items = vec![root.clone()];
    if meta.is_dir() {
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
        items.extend(walk_local(local, reporter)?);
    }
    let mut progress = ByteProgress::new(
        reporter,
        format!("upload {}", local.display()),
        Some(items.iter().map(|i| i.size).sum()),
    );
    for dir in items.iter().filter(|i| i.kind == Kind::Dir) {
        let path = join_remote(&target, &dir.rel);
        let writable = FileAttributes {
            permissions: Some(0o700),
            ..Default::default()
        };
        if let Err(e) = sftp.raw.mkdir(&path, writable).await {
            match sftp.stat(&path).await? {
                Some(a) if a.permissions.unwrap_or(0) & S_IFMT == S_IFDIR => {}
                _ => return Err(sftp_err(format!("create directory {path}"), e)),
            }
        }
    }
    for file in items.iter().filter(|i| i.kind == Kind::File) {
        let from = if file.rel.is_empty() {
            local.to_path_buf()
        } else {
            local.join(&file.rel)
        };
        let to = join_remote(&target, &file.rel);
        stats.bytes += sftp.upload_file(&from, &to, file, &mut progress).await?;
        stats.files += 1;
    }
    progress.finish();
    // Directories last, deepest first: writing into a directory changes its modification time.
    for dir in items.iter().rev().filter(|i| i.kind == Kind::Dir) {
        let path = join_remote(&target, &dir.rel);
        let attrs = FileAttributes {
            permissions: Some(dir.mode),
            atime: Some(dir.atime),
            mtime: Some(dir.mtime),
            ..Default::default()
        };
        sftp.raw
            .setstat(&path, attrs)
            .await
            .map_err(|e| sftp_err(format!("set mode and times of {path}"), e))?;
    }
    Ok(())
}

async fn download(
    sftp: &Sftp,
    remote: &str,
    local: &Path,
    reporter: &dyn Reporter,
    stats: &mut TransferStats,
) -> Result<()> {
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
        size: attrs.size.unwrap_or(0),
        mode: mode & COPIED_MODE,
        atime: attrs.atime.unwrap_or(0),
        mtime: attrs.mtime.unwrap_or(0),
    };
    let mut items = vec![root];
    if kind == Kind::Dir {
        if target.exists() && !target.is_dir() {
            return Err(Error::Remote {
                message: format!(
                    "cannot copy directory {remote} onto the file {}",
                    target.display()
                ),
                hint: None,
            });
        }
        items.extend(sftp.walk(&remote, reporter).await?);
    }
    let mut progress = ByteProgress::new(
        reporter,
        format!("download {remote}"),
        Some(items.iter().map(|i| i.size).sum()),
    );
    let local_path = |rel: &str| {
        if rel.is_empty() {
            Ok(target.clone())
        } else {
            local_under(&target, rel)
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
    for file in items.iter().filter(|i| i.kind == Kind::File) {
        let from = join_remote(&remote, &file.rel);
        let to = local_path(&file.rel)?;
        stats.bytes += sftp.download_file(&from, &to, file, &mut progress).await?;
        stats.files += 1;
    }
    progress.finish();
    for dir in items.iter().rev().filter(|i| i.kind == Kind::Dir) {
        let path = local_path(&dir.rel)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(dir.mode))
            .map_err(|e| Error::io(format!("set the mode of {}", path.display()), e))?;
        std::fs::File::open(&path)
            .and_then(|f| f.set_times(file_times(dir)))
            .map_err(|e| Error::io(format!("set the times of {}", path.display()), e))?;
    }
    Ok(())
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
    fn listed_names_never_leave_the_target() {
        for bad in ["..", ".", "../x", "a/b", "/etc", "x\0y", ""] {
            assert!(entry_name("/w", bad).is_err(), "{bad:?}");
        }
        assert_eq!(entry_name("/w", "..hidden").unwrap(), "..hidden");
        let target = Path::new("/tmp/t");
        assert_eq!(local_under(target, "a/b").unwrap(), target.join("a/b"));
        for bad in ["../x", "a/../../x", "/etc/passwd", "./a"] {
            assert!(local_under(target, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn temporary_names_are_hidden_and_unique() {
        let (a, b) = (temp_name("f.bin"), temp_name("f.bin"));
        assert!(a.starts_with(".f.bin.gpulab-") && a.ends_with(".part"));
        assert_ne!(a, b);
    }
}
