//! Remote execution through the Kubernetes API server, as `kubectl exec`, `cp` and `port-forward` do it:
//! no SSH and no open port needed, only access to the cluster.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{
    CopyDirection, ExecRequest, ExecStreams, ExitStatus, RemoteExec, TransferStats, Tunnel,
};
use crate::cluster::cluster_error;
use crate::events::{ByteProgress, Reporter};
use crate::{Error, Result};

/// Runs commands in one container of a pod through the API server.
#[derive(Clone)]
pub struct ApiServerExec {
    pods: Api<Pod>,
    pod: String,
    container: Option<String>,
}

impl ApiServerExec {
    /// Exec into `pod` in `namespace` (its first container, or `container`).
    pub fn new(client: kube::Client, namespace: &str, pod: &str, container: Option<&str>) -> Self {
        ApiServerExec {
            pods: Api::namespaced(client, namespace),
            pod: pod.into(),
            container: container.map(Into::into),
        }
    }

    async fn start(&self, request: &ExecRequest, stdin: bool) -> Result<AttachedProcess> {
        let mut argv: Vec<String> = Vec::new();
        if !request.env.is_empty() {
            argv.push("env".into());
            argv.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        argv.extend(request.argv.iter().cloned());
        let mut params = AttachParams::default()
            .stdin(stdin)
            .stdout(true)
            .stderr(true);
        if let Some(container) = &self.container {
            params = params.container(container.clone());
        }
        self.pods
            .exec(&self.pod, argv, &params)
            .await
            .map_err(|e| cluster_error(&format!("exec in pod {}", self.pod), e))
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

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<u64> {
    let copied = tokio::io::copy(&mut from, &mut to).await?;
    to.flush().await?;
    Ok(copied)
}

/// Feed all of `from` to a command's stdin, then close it: dropping the writer alone never sends the
/// end of input, and the command would wait for more.
async fn feed_stdin(
    from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<u64> {
    let copied = pump(from, &mut to).await?;
    to.shutdown().await?;
    Ok(copied)
}

/// The shell script that receives an upload: unpack into a temporary directory beside the target, then
/// rename into place, so a failed copy never leaves a partial file at the target name.
const RECEIVE: &str = r#"set -e
dest=$1 name=$2
if [ -d "$dest" ]; then dir=$dest target=$dest/$name; else dir=$(dirname -- "$dest") target=$dest; fi
mkdir -p -- "$dir"
tmp=$(mktemp -d "$dir/.gpulab-cp.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
tar -x -p -f - -C "$tmp"
if [ -d "$tmp/$name" ] && [ -d "$target" ]; then cp -a -- "$tmp/$name/." "$target/"; else mv -f -T -- "$tmp/$name" "$target"; fi
"#;

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
        let run = async {
            let mut process = self.start(&request, streams.stdin.is_some()).await?;
            let status = process.take_status().expect("status is taken once");
            let stdout = process.stdout().expect("stdout was requested");
            let stderr = process.stderr().expect("stderr was requested");
            // In a block of its own: the stream futures borrow the process until they are dropped.
            {
                let feed = async {
                    if let (Some(input), Some(writer)) = (streams.stdin, process.stdin()) {
                        feed_stdin(input, writer).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                // The first failure ends both: a stream left unread would stall the other.
                let outputs = async {
                    tokio::try_join!(pump(stdout, streams.stdout), pump(stderr, streams.stderr))
                };
                tokio::pin!(feed, outputs);
                let stream_error = |e: std::io::Error| Error::Remote {
                    message: format!("exec stream: {e}"),
                    hint: None,
                };
                // The command is done when its output ends; input it never read (a script's stdin left
                // open) must not keep us waiting.
                let mut feeding = true;
                loop {
                    tokio::select! {
                        fed = &mut feed, if feeding => {
                            fed.map_err(stream_error)?;
                            feeding = false;
                        }
                        done = &mut outputs => {
                            done.map_err(stream_error)?;
                            break;
                        }
                    }
                }
            }
            let status = exit_status(status.await);
            let _ = process.join().await;
            status
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

    async fn copy(
        &self,
        direction: CopyDirection,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        match direction {
            CopyDirection::Upload { local, remote } => self.upload(&local, &remote, reporter).await,
            CopyDirection::Download { remote, local } => {
                self.download(&remote, &local, reporter).await
            }
        }
    }

    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>> {
        let mut forwarder = self
            .pods
            .portforward(&self.pod, &[port])
            .await
            .map_err(|e| cluster_error(&format!("port-forward to {}:{port}", self.pod), e))?;
        let stream = forwarder.take_stream(port).ok_or_else(|| Error::Remote {
            message: format!("the API server opened no stream for port {port}"),
            hint: None,
        })?;
        // The forwarder's task keeps running for the stream after the handle is dropped.
        Ok(Box::new(stream))
    }
}

impl ApiServerExec {
    async fn upload(
        &self,
        local: &Path,
        remote: &str,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        let started = Instant::now();
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
        let (files, total) = if meta.is_dir() {
            tree_size(local)?
        } else {
            (1, meta.len())
        };

        // tar is written on a blocking thread into one end of a pipe; the other end feeds exec's stdin.
        let (reader, writer) = tokio::io::duplex(1 << 20);
        let source = local.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            archive(tokio_util::io::SyncIoBridge::new(writer), &source)?.shutdown()
        });
        let request = ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                RECEIVE.into(),
                "gpulab-cp".into(),
                remote.into(),
                name,
            ],
            ..Default::default()
        };
        // The progress counts the archive's bytes, headers and padding included: its total is theirs.
        let size = archive_size(local)?;
        let step = format!("upload {}", local.display());
        let counted = ProgressReader::new(reader, step, Some(size), reporter);
        let mut stderr = Vec::new();
        let streams = ExecStreams {
            stdin: Some(Box::pin(counted)),
            stdout: Box::pin(tokio::io::sink()),
            stderr: Box::pin(&mut stderr),
        };
        let status = self.exec_streaming(request, streams).await;
        let archived = archive.await.map_err(|e| Error::Remote {
            message: format!("tar: {e}"),
            hint: None,
        })?;
        let status = status?;
        archived.map_err(|e| Error::io(format!("archive {}", local.display()), e))?;
        if !status.success() {
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
        Ok(TransferStats {
            files,
            bytes: total,
            elapsed: started.elapsed(),
        })
    }

    async fn download(
        &self,
        remote: &str,
        local: &Path,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        let started = Instant::now();
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
        let staging = unpack_dir.join(format!(
            ".gpulab-cp.{}",
            crate::workspace::generate_token()?
                .get(..12)
                .unwrap_or("tmp")
        ));
        std::fs::create_dir_all(&staging)
            .map_err(|e| Error::io(format!("create {}", staging.display()), e))?;
        let cleanup = StagingDir(staging.clone());

        let (reader, writer) = tokio::io::duplex(1 << 20);
        let unpack_into = staging.clone();
        let unpack = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64)> {
            let mut archive = tar::Archive::new(tokio_util::io::SyncIoBridge::new(reader));
            archive.set_preserve_permissions(true);
            archive.set_preserve_mtime(true);
            let (mut files, mut bytes) = (0, 0);
            for entry in archive.entries()? {
                let mut entry = entry?;
                if entry.header().entry_type().is_file() {
                    files += 1;
                    bytes += entry.size();
                }
                entry.unpack_in(&unpack_into)?;
            }
            // tar pads its stream past the end-of-archive marker; read it all, or the sender sees a
            // broken pipe.
            std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
            Ok((files, bytes))
        });
        let request = ExecRequest {
            argv: vec![
                "tar".into(),
                "-c".into(),
                "-f".into(),
                "-".into(),
                "-C".into(),
                parent.display().to_string(),
                name.clone(),
            ],
            ..Default::default()
        };
        let mut stderr = Vec::new();
        let progress = ProgressWriter::new(writer, format!("download {remote}"), reporter);
        let streams = ExecStreams {
            stdin: None,
            stdout: Box::pin(progress),
            stderr: Box::pin(&mut stderr),
        };
        let status = self.exec_streaming(request, streams).await?;
        let unpacked = unpack.await.map_err(|e| Error::Remote {
            message: format!("tar: {e}"),
            hint: None,
        })?;
        if !status.success() {
            return Err(Error::Remote {
                message: format!(
                    "copy from {remote} failed: {}",
                    String::from_utf8_lossy(&stderr).trim()
                ),
                hint: None,
            });
        }
        let (files, bytes) =
            unpacked.map_err(|e| Error::io(format!("unpack into {}", staging.display()), e))?;
        move_into(&staging.join(&name), &target)?;
        drop(cleanup);
        Ok(TransferStats {
            files,
            bytes,
            elapsed: started.elapsed(),
        })
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into())
}

/// `source` as a tar archive into `out`, named by its last component, symlinks kept as symlinks.
fn archive<W: std::io::Write>(out: W, source: &Path) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    if source.is_dir() {
        builder.append_dir_all(name_of(source), source)?;
    } else {
        builder.append_path_with_name(source, name_of(source))?;
    }
    builder.into_inner()
}

/// The size of the archive [`archive`] writes for `source`, without reading the files: a 512-byte
/// header per entry, before it a GNU long-name entry for a path (or link target) of over 100 bytes,
/// each file's data padded to 512 bytes, and two zero blocks at the end.
fn archive_size(source: &Path) -> Result<u64> {
    const BLOCK: u64 = 512;
    let padded = |n: u64| n.div_ceil(BLOCK) * BLOCK;
    // A path or link target that does not fit the header's 100 bytes goes in an entry of its own.
    let long = |name: &Path| {
        let len = name.as_os_str().len() as u64;
        if len > 100 {
            BLOCK + padded(len + 1)
        } else {
            0
        }
    };
    let read = |path: &Path| {
        std::fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))
    };
    let root = Path::new(&name_of(source)).to_path_buf();
    let mut size = 2 * BLOCK;
    if !read(source)?.is_dir() {
        return Ok(size + BLOCK + long(&root) + padded(read(source)?.len()));
    }
    // As tar's append_dir_all names them: the root with a trailing slash, the rest below it.
    let mut stack = vec![(source.to_path_buf(), root.join(""))];
    while let Some((path, name)) = stack.pop() {
        let meta = read(&path)?;
        size += BLOCK + long(&name);
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
                stack.push((entry.path(), name.join(entry.file_name())));
            }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            size += long(&target);
        } else if meta.is_file() {
            size += padded(meta.len());
        }
    }
    Ok(size)
}

/// Files and bytes under `dir`.
fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let entries = std::fs::read_dir(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(format!("read {}", entry.path().display()), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// Move `from` to `to` by renames: a file replaces the target in one step; a directory moves whole, or
/// merges into an existing directory file by file.
fn move_into(from: &Path, to: &Path) -> Result<()> {
    let rename = |a: &Path, b: &Path| {
        std::fs::rename(a, b).map_err(|e| Error::io(format!("move into {}", b.display()), e))
    };
    if from.is_dir() && to.is_dir() {
        let entries = std::fs::read_dir(from)
            .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
        for entry in entries.flatten() {
            move_into(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        rename(from, to)
    }
}

/// Removes a staging directory when dropped, on success and failure alike.
struct StagingDir(PathBuf);

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reports bytes read through it ([`ByteProgress`]).
struct ProgressReader<'a, R> {
    inner: R,
    progress: ByteProgress<'a>,
}

impl<'a, R> ProgressReader<'a, R> {
    fn new(inner: R, step: String, total: Option<u64>, reporter: &'a dyn Reporter) -> Self {
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
struct ProgressWriter<'a, W> {
    inner: W,
    progress: ByteProgress<'a>,
}

impl<'a, W> ProgressWriter<'a, W> {
    fn new(inner: W, step: String, reporter: &'a dyn Reporter) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The upload's progress total is the archive's size, to the byte: files of every padding, empty
    /// directories, paths and symlink targets over tar's 100 bytes.
    #[test]
    fn archive_size_is_the_size_of_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let deep = root.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        for (name, len) in [("zero", 0), ("one", 1), ("block", 512), ("more", 513)] {
            std::fs::write(root.join(name), vec![7u8; len]).unwrap();
        }
        std::fs::write(deep.join("c".repeat(30)), b"deep").unwrap();
        std::os::unix::fs::symlink("one", root.join("short-link")).unwrap();
        std::os::unix::fs::symlink("x".repeat(120), root.join("long-link")).unwrap();

        for source in [root.clone(), root.join("more"), deep.join("c".repeat(30))] {
            let written = archive(Vec::new(), &source).unwrap();
            assert_eq!(
                archive_size(&source).unwrap(),
                written.len() as u64,
                "{}",
                source.display()
            );
        }
    }
}
