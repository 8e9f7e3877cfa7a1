//! Remote execution in the workspace: run commands, copy files, open tunnels to the pod's ports. Two
//! transports implement it: the Kubernetes API server (exec and port-forward, like `kubectl`) and SSH; a
//! third, [`local::LocalExec`], runs the same calls on this machine (`gpulab test --local`).

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::events::Reporter;
use crate::{Error, Result};

pub mod api_server;
pub(crate) mod archive;
pub mod copy;
pub mod forward;
pub mod glob;
pub(crate) mod kube_stream;
pub mod local;
pub mod ssh;
pub mod ssh_config;
pub mod sync;
pub(crate) mod tree;

/// A command to run in the workspace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecRequest {
    /// The program and its arguments, run without a shell; wrap in `["bash", "-lc", …]` for one.
    pub argv: Vec<String>,
    /// Bytes for the command's standard input; `None` closes it at once.
    pub stdin: Option<Vec<u8>>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// A request to run `script` with `bash -lc`, so the login environment (PATH, the venv) applies.
    pub fn shell(script: impl Into<String>) -> Self {
        ExecRequest {
            argv: vec!["bash".into(), "-lc".into(), script.into()],
            ..Default::default()
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it (the signal's name without "SIG", e.g. "KILL", where the transport says which).
    Signal(&'static str),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }

    /// The code a shell would report: the exit code, or 128 + the signal's number.
    pub fn shell_code(&self) -> i32 {
        match self {
            ExitStatus::Code(code) => *code,
            ExitStatus::Signal(name) => 128 + signal_number(name),
        }
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// A finished command's captured output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOutput {
    /// Everything it wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote to standard error.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// Where a streaming command's output goes as it arrives.
pub struct ExecStreams<'a> {
    /// Standard input, read until its end.
    pub stdin: Option<Pin<Box<dyn AsyncRead + Send + 'a>>>,
    /// Standard output.
    pub stdout: Pin<Box<dyn AsyncWrite + Send + 'a>>,
    /// Standard error.
    pub stderr: Pin<Box<dyn AsyncWrite + Send + 'a>>,
}

/// Which way a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDirection {
    /// From this machine into the workspace.
    Upload {
        /// Local file or directory.
        local: PathBuf,
        /// Path in the workspace; an existing directory receives the source inside it.
        remote: String,
    },
    /// From the workspace to this machine.
    Download {
        /// Path in the workspace.
        remote: String,
        /// Local file or directory.
        local: PathBuf,
    },
}

/// What a copy does with the symbolic links it finds inside a directory it copies. A source named on its
/// own is always followed, as `cp` and `scp` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Links {
    /// Copy what a link to a file points to, as a file (as `scp -r` does); links to directories and
    /// links to nothing are skipped with a warning.
    #[default]
    Follow,
    /// Copy links as links, pointing where they point (as `tar`, `rsync -l` and `kubectl cp` do).
    Keep,
}

impl std::str::FromStr for Links {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "follow" => Ok(Links::Follow),
            "keep" => Ok(Links::Keep),
            other => Err(Error::Usage {
                message: format!("links: {other:?} is not a way to copy links"),
                hint: "use `follow` (copy what they point to) or `keep` (copy them as links)"
                    .into(),
            }),
        }
    }
}

/// How one copy is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyOptions {
    /// Symbolic links inside directories.
    pub links: Links,
    /// Copy file by file over SFTP even where one tar stream would be faster (a workspace without `tar`
    /// is detected and falls back by itself).
    pub file_by_file: bool,
}

/// What a copy moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransferStats {
    /// Files copied.
    pub files: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A byte stream to a port in the workspace.
pub trait Tunnel: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Tunnel for T {}

/// A transport into the workspace. Implementations keep their connection and reuse it across calls.
/// Copies are atomic: a failed copy never leaves a truncated file at the target name.
#[async_trait]
pub trait RemoteExec: Send + Sync {
    /// A short name for messages: "kube", "ssh".
    fn name(&self) -> &'static str;

    /// Run a command and capture its output (`request.stdin` is its input): [`Self::exec_streaming`]
    /// into buffers.
    async fn exec(&self, request: ExecRequest) -> Result<ExecOutput> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let input = request.stdin.clone();
        let status = {
            let streams = ExecStreams {
                stdin: input
                    .as_deref()
                    .map(|b| Box::pin(b) as Pin<Box<dyn AsyncRead + Send + '_>>),
                stdout: Box::pin(&mut stdout),
                stderr: Box::pin(&mut stderr),
            };
            self.exec_streaming(request, streams).await?
        };
        Ok(ExecOutput {
            stdout,
            stderr,
            status,
        })
    }

    /// Run a command, streaming its input and output.
    async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus>;

    /// Copy files or directories (recursively), keeping permissions and modification times; progress in
    /// bytes goes to `reporter`. [`Self::copy_with`] with the default options.
    async fn copy(
        &self,
        direction: CopyDirection,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        self.copy_with(direction, &CopyOptions::default(), reporter)
            .await
    }

    /// [`Self::copy`] as `options` say (a transport may ignore options it has no use for).
    async fn copy_with(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats>;

    /// Open a byte stream to `port` in the workspace (local port forwarding is built on this).
    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>>;

    /// The names in the workspace directory `path` (`~` and `~/…` are the home directory), without `.` and
    /// `..`, in no particular order; `None` when `path` does not exist or is not a directory (a link to a
    /// directory counts as one). [`glob`] expands patterns with it. By default the remote shell lists it;
    /// SSH lists it over SFTP.
    async fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        list_dir_by_shell(self, path).await
    }
}

/// [`RemoteExec::list_dir`] by the remote shell ([`LIST_DIR`]).
async fn list_dir_by_shell<R: RemoteExec + ?Sized>(
    remote: &R,
    path: &str,
) -> Result<Option<Vec<String>>> {
    let request = ExecRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            LIST_DIR.into(),
            "gpulab-ls".into(),
            path.into(),
        ],
        timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let out = remote.exec(request).await?;
    match out.status {
        ExitStatus::Code(0) => {}
        ExitStatus::Code(NOT_A_DIRECTORY) => return Ok(None),
        status => {
            return Err(Error::Remote {
                message: format!(
                    "list {path} in the workspace: {}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    match status {
                        ExitStatus::Code(code) => format!(" (exit code {code})"),
                        ExitStatus::Signal(signal) => format!(" (killed by SIG{signal})"),
                    }
                ),
                hint: Some("the workspace needs a POSIX `sh`; is the pod running?".into()),
            });
        }
    }
    Ok(Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect(),
    ))
}

/// The exit code of [`LIST_DIR`] for a path that is not a directory.
const NOT_A_DIRECTORY: i32 = 3;

/// Lists the directory `$1` NUL-separated with the shell's own globs (`.*` and `*`, so names with newlines
/// or spaces come through intact), or exits with [`NOT_A_DIRECTORY`].
const LIST_DIR: &str = r#"case $1 in "~") set -- "$HOME" ;; "~/"*) set -- "$HOME/${1#"~/"}" ;; esac
[ -d "$1" ] || exit 3
cd -- "$1" || exit 4
for f in .* *; do
  case $f in .|..) continue ;; esac
  if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\000' "$f"; fi
done
"#;

/// Quote one word for a POSIX shell (every command line gpulab sends: exec, SSH, Slurm, vLLM).
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_codes_follow_bash() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal("KILL").shell_code(), 137);
        assert_eq!(ExitStatus::Signal("TERM").shell_code(), 143);
        assert!(ExitStatus::Code(0).success() && !ExitStatus::Signal("INT").success());
    }
}
