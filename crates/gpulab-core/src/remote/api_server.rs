//! Remote execution through the Kubernetes API server, as `kubectl exec`, `cp` and `port-forward` do it:
//! no SSH and no open port needed, only access to the cluster. The streams themselves are gpulab's own
//! ([`super::kube_stream`]): large WebSocket messages, written without a flush each.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::{AsyncRead, AsyncWrite};

use super::archive::{self, NO_TAR, OTHER_USER, RECEIVE, SEND_ENTRY, Staging, USER_VAR};
use super::kube_stream::{self, CHUNK};
use super::tree::{local_item, walk_local};
use super::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, Links, RemoteExec,
    TransferStats, Tunnel,
};
use crate::events::{ByteProgress, Event, Reporter};
use crate::{Error, Result};

/// Bytes buffered between the thread that reads or writes the tar stream and the exec stream.
const PIPE: usize = 4 * CHUNK;

/// Runs commands in one container of a pod through the API server.
#[derive(Clone)]
pub struct ApiServerExec {
    client: kube::Client,
    namespace: String,
    pod: String,
    container: Option<String>,
    /// Copies see the workspace as an SSH login does ([`ApiServerExec::like_ssh`]).
    like_ssh: bool,
    /// With `like_ssh`: the user the copy's commands must run as.
    user: Option<String>,
}

/// How a copy through the API server ended: done, or not possible this way (the reason), so the caller
/// may take another.
pub(crate) enum Attempt {
    Done(TransferStats),
    Unsuitable(String),
}

impl ApiServerExec {
    /// Exec into `pod` in `namespace` (its first container, or `container`).
    pub fn new(client: kube::Client, namespace: &str, pod: &str, container: Option<&str>) -> Self {
        ApiServerExec {
            client,
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.map(Into::into),
            like_ssh: false,
            user: None,
        }
    }

    /// Copy as SSH would: workspace paths that are relative are relative to the home directory (not the
    /// container's working directory), and with `user`, a copy whose commands would run as anyone else
    /// fails without writing anything (files must belong to the user SSH logs in as).
    pub fn like_ssh(mut self, user: Option<String>) -> Self {
        self.like_ssh = true;
        self.user = user;
        self
    }

    /// `path` as the copy's scripts take it: relative ones from `~` when copying like SSH.
    fn workspace_path(&self, path: &str) -> String {
        match path {
            _ if !self.like_ssh || path.starts_with('/') || path.starts_with('~') => path.into(),
            "" | "." => "~".into(),
            _ => format!("~/{path}"),
        }
    }

    fn copy_env(&self) -> Vec<(String, String)> {
        self.user
            .iter()
            .map(|user| (USER_VAR.to_string(), user.clone()))
            .collect()
    }

    /// Copy through exec; [`Attempt::Unsuitable`] when the workspace has no tar, or the command would run
    /// as someone other than [`Self::like_ssh`]'s user.
    pub(crate) async fn try_copy(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<Attempt> {
        match direction {
            CopyDirection::Upload { local, remote } => {
                self.upload(&local, &remote, options, reporter).await
            }
            CopyDirection::Download { remote, local } => {
                self.download(&remote, &local, options, reporter).await
            }
        }
    }
}

/// What an exit status of the copy scripts says about this way of copying, if it rules it out.
fn unsuitable(status: ExitStatus, stderr: &[u8]) -> Option<String> {
    match status {
        ExitStatus::Code(NO_TAR) => Some("the workspace has no `tar`".into()),
        ExitStatus::Code(OTHER_USER) => Some(String::from_utf8_lossy(stderr).trim().to_string()),
        _ => None,
    }
}

/// The exit status the API server reports on the status channel.
fn exit_status(status: Option<Status>) -> Result<ExitStatus> {
    let Some(status) = status else {
        return Err(Error::Remote {
            message: "the API server closed the exec stream without an exit status".into(),
            hint: None,
        });
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(ExitStatus::Code(0));
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref()?.parse().ok());
    match code {
        Some(code) => Ok(ExitStatus::Code(code)),
        None => {
            let message = status.message.unwrap_or_default();
            let lower = message.to_ascii_lowercase();
            // The runtime could not start the program: its name or PATH is wrong, the pod is fine.
            if lower.contains("executable file not found")
                || lower.contains("no such file or directory")
            {
                return Err(Error::Remote {
                    message: format!("the command was not found in the workspace: {message}"),
                    hint: Some(
                        "check its name; `gpulab exec -- bash -lc 'CMD'` runs it with the login shell's PATH (the venv's tools)"
                            .into(),
                    ),
                });
            }
            Err(Error::Remote {
                message: format!("exec failed: {message}"),
                hint: Some("is the workspace pod running? `gpulab status`".into()),
            })
        }
    }
}

#[async_trait]
impl RemoteExec for ApiServerExec {
    fn name(&self) -> &'static str {
        "kube"
    }

    async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        let timeout = request.timeout;
        let mut argv: Vec<String> = Vec::new();
        if !request.env.is_empty() {
            argv.push("env".into());
            argv.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        argv.extend(request.argv.iter().cloned());
        let run = async {
            let status = kube_stream::exec(
                &self.client,
                &self.namespace,
                &self.pod,
                self.container.as_deref(),
                argv,
                streams,
            )
            .await?;
            exit_status(status)
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("{:?}", request.argv),
                    waited: limit,
                    pending: "the command had not finished".into(),
                })?,
            None => run.await,
        }
    }

    async fn copy_with(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        let what = match &direction {
            CopyDirection::Upload { remote, .. } => format!("copy to {remote}"),
            CopyDirection::Download { remote, .. } => format!("copy from {remote}"),
        };
        match self.try_copy(direction, options, reporter).await? {
            Attempt::Done(stats) => Ok(stats),
            Attempt::Unsuitable(reason) => Err(Error::Remote {
                message: format!("{what}: {reason}"),
                hint: Some("install tar in the image, or copy over SSH (`--via ssh`)".into()),
            }),
        }
    }

    async fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        let path = self.workspace_path(path);
        super::list_dir_by_shell(self, &path).await
    }

    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>> {
        kube_stream::port_forward(&self.client, &self.namespace, &self.pod, port).await
    }
}

impl ApiServerExec {
    async fn upload(
        &self,
        local: &Path,
        remote: &str,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<Attempt> {
        let started = Instant::now();
        let remote = &self.workspace_path(remote);
        let name = local
            .file_name()
            .ok_or_else(|| Error::Remote {
                message: format!("{} names no file", local.display()),
                hint: None,
            })?
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::metadata(local)
            .map_err(|e| Error::io(format!("read {}", local.display()), e))?;
        if !(meta.is_dir() || meta.is_file()) {
            return Err(Error::Remote {
                message: format!("{} is not a regular file or directory", local.display()),
                hint: None,
            });
        }
        let root = local_item(String::new(), &meta);
        let root_mtime = root.mtime;
        let items = if meta.is_dir() {
            walk_local(local, options.links, reporter)?
        } else {
            Vec::new()
        };
        let files = items
            .iter()
            .filter(|i| i.kind == super::tree::Kind::File)
            .count() as u64
            + u64::from(meta.is_file());
        let total = root.size + items.iter().map(|i| i.size).sum::<u64>();
        crate::profile::mark("tree walked");

        // The progress counts the archive's bytes, headers and padding included: its total is theirs.
        let size = archive::packed_size(&name, &root, &items);
        // tar is written on a blocking thread into one end of a pipe; the other end feeds exec's stdin.
        let (reader, writer) = tokio::io::duplex(PIPE);
        let source = local.to_path_buf();
        let archive_name = name.clone();
        let archive = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let out =
                std::io::BufWriter::with_capacity(CHUNK, tokio_util::io::SyncIoBridge::new(writer));
            let out = archive::pack(out, &source, &archive_name, &root, &items, |_| {})?;
            let mut bridge = out.into_inner().map_err(|e| e.into_error())?;
            bridge.flush()?;
            bridge.shutdown()
        });
        let request = ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                RECEIVE.into(),
                "gpulab-cp".into(),
                remote.into(),
                name,
                "into".into(),
                root_mtime.to_string(),
            ],
            env: self.copy_env(),
            ..Default::default()
        };
        let step = format!("upload {}", local.display());
        let counted = ProgressReader::new(reader, step, Some(size), reporter);
        let mut stderr = Vec::new();
        let streams = ExecStreams {
            stdin: Some(Box::pin(counted)),
            stdout: Box::pin(tokio::io::sink()),
            stderr: Box::pin(&mut stderr),
        };
        let status = self.exec_streaming(request, streams).await;
        crate::profile::mark("exec ended");
        let archived = archive.await.map_err(|e| Error::Remote {
            message: format!("tar: {e}"),
            hint: None,
        })?;
        let status = match status {
            Ok(status) => status,
            Err(e) => return self.why_refused(e).await,
        };
        if let Some(reason) = unsuitable(status, &stderr) {
            return Ok(Attempt::Unsuitable(reason));
        }
        if status.success() {
            archived.map_err(|e| Error::io(format!("archive {}", local.display()), e))?;
        } else {
            return Err(Error::Remote {
                message: format!(
                    "copy to {remote} failed: {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
                hint: Some(
                    "the workspace needs `tar` and write access to the target directory".into(),
                ),
            });
        }
        Ok(Attempt::Done(TransferStats {
            files,
            bytes: total,
            elapsed: started.elapsed(),
        }))
    }

    /// An upload's stream broke (`failure`): if the workspace refuses this way of copying up front (no
    /// tar, another user), that is why, and the copy is unsuitable rather than failed.
    async fn why_refused(&self, failure: Error) -> Result<Attempt> {
        let probe = ExecRequest {
            argv: vec!["sh".into(), "-c".into(), archive::PRECONDITIONS.into()],
            env: self.copy_env(),
            ..Default::default()
        };
        match self.exec(probe).await {
            Ok(out) => match unsuitable(out.status, &out.stderr) {
                Some(reason) => Ok(Attempt::Unsuitable(reason)),
                None => Err(failure),
            },
            Err(_) => Err(failure),
        }
    }

    async fn download(
        &self,
        remote: &str,
        local: &Path,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<Attempt> {
        let started = Instant::now();
        let remote = &self.workspace_path(remote);
        let remote_path = Path::new(remote);
        let name = name_of(remote_path);
        let parent = remote_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (target, unpack_dir) = if local.is_dir() {
            (local.join(&name), local.to_path_buf())
        } else {
            (
                local.to_path_buf(),
                local
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            )
        };
        let staging = Staging::new(&unpack_dir)?;

        let (reader, writer) = tokio::io::duplex(PIPE);
        let unpack_into = staging.path().to_path_buf();
        let keep_links = options.links == Links::Keep;
        let unpack = tokio::task::spawn_blocking(move || {
            let mut skipped = Vec::new();
            let input =
                std::io::BufReader::with_capacity(CHUNK, tokio_util::io::SyncIoBridge::new(reader));
            let unpacked =
                archive::unpack(input, &unpack_into, keep_links, |s| skipped.push(s), |_| {});
            (unpacked, skipped)
        });
        let mut argv: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            SEND_ENTRY.into(),
            "gpulab-cp".into(),
            parent.display().to_string(),
            name.clone(),
        ];
        if !keep_links {
            argv.push("-h".into());
        }
        let request = ExecRequest {
            argv,
            env: self.copy_env(),
            ..Default::default()
        };
        let mut stderr = Vec::new();
        let progress = ProgressWriter::new(writer, format!("download {remote}"), reporter);
        let streams = ExecStreams {
            stdin: None,
            stdout: Box::pin(progress),
            stderr: Box::pin(&mut stderr),
        };
        let status = self.exec_streaming(request, streams).await;
        crate::profile::mark("exec ended");
        let (unpacked, skipped) = unpack.await.map_err(|e| Error::Remote {
            message: format!("tar: {e}"),
            hint: None,
        })?;
        // A name refused while unpacking stops the stream too: that refusal is the news.
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Err(match unpacked {
                    Err(refused @ Error::Remote { .. }) => refused,
                    _ => e,
                });
            }
        };
        if let Some(reason) = unsuitable(status, &stderr) {
            return Ok(Attempt::Unsuitable(reason));
        }
        if !status.success() {
            return Err(Error::Remote {
                message: format!(
                    "copy from {remote} failed: {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
                hint: None,
            });
        }
        let unpacked = unpacked?;
        for message in skipped {
            reporter.report(Event::Warning { message });
        }
        archive::move_into(&staging.path().join(&name), &target)?;
        drop(staging);
        Ok(Attempt::Done(TransferStats {
            files: unpacked.files,
            bytes: unpacked.bytes,
            elapsed: started.elapsed(),
        }))
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

/// Reports bytes read through it ([`ByteProgress`]).
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    progress: ByteProgress<'a>,
}

impl<'a, R> ProgressReader<'a, R> {
    pub(crate) fn new(
        inner: R,
        step: impl Into<String>,
        total: Option<u64>,
        reporter: &'a dyn Reporter,
    ) -> Self {
        ProgressReader {
            inner,
            progress: ByteProgress::new(reporter, step, total),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ProgressReader<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read == 0 {
            self.progress.finish();
        } else {
            self.progress.add(read);
        }
        poll
    }
}

/// Reports bytes written through it ([`ByteProgress`]).
pub(crate) struct ProgressWriter<'a, W> {
    inner: W,
    progress: ByteProgress<'a>,
}

impl<'a, W> ProgressWriter<'a, W> {
    pub(crate) fn new(inner: W, step: impl Into<String>, reporter: &'a dyn Reporter) -> Self {
        ProgressWriter {
            inner,
            progress: ByteProgress::new(reporter, step, None),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ProgressWriter<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            let n = *n as u64;
            self.progress.add(n);
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.progress.finish();
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
