//! [`RemoteExec`] over SSH, with russh: one connection over any byte stream (a TCP address, or a tunnel
//! through the Kubernetes API server's port-forward), many channels on it at once.
//!
//! ```no_run
//! # async fn demo() -> gpulab_core::Result<()> {
//! use gpulab_core::remote::{ExecRequest, RemoteExec};
//! use gpulab_core::remote::ssh::{HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key};
//!
//! let host_key = parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEN7HBTe3gkJgWbZi81V0IPaO/2YlEJhp+En7NdQZedx")?;
//! let options = SshOptions::new(
//!     "root",
//!     SshAuth::key("/home/me/.ssh/id_ed25519").with_agent_from_env(),
//!     HostKeyPolicy::Pinned(host_key),
//! );
//! let ssh = SshSession::connect_tcp("203.0.113.7:22", options).await?;
//! let out = ssh.exec(ExecRequest::shell("nvidia-smi -L")).await?;
//! assert!(out.status.success());
//! # Ok(()) }
//! ```
//!
//! **Channels.** OpenSSH's sshd allows `MaxSessions` (default 10) session channels per connection; execs and
//! copies each hold one, so [`SshOptions::max_sessions`] (default 8) caps how many run at once and the rest
//! wait their turn. Tunnels are direct-tcpip channels, which sshd does not count, and are not capped.
//!
//! **Environment.** sshd honours `setenv` only for names in its `AcceptEnv`, so [`ExecRequest::env`] is
//! passed as `env NAME=VALUE … command` instead.

mod auth;
mod exec;
mod host_key;
mod shell;
pub(crate) mod transfer;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, Handle, Msg};
use russh::{Channel, cipher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::ToSocketAddrs;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use auth::{PassphraseFn, SshAuth};
pub use host_key::{
    HostKeyPolicy, RecordHostKey, fingerprint, format_public_key, parse_public_key,
};
pub use russh::keys::PublicKey;
pub use shell::{PtyRequest, ShellIo};

use self::host_key::{ClientHandler, HandlerError};
use super::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, RemoteExec, TransferStats,
    Tunnel,
};
use crate::events::Reporter;
use crate::{Error, Result};

/// The environment variable that names the user gpulab logs in as in the workspace: for images whose sshd
/// admits someone other than `root`.
pub const USER_ENV: &str = "GPULAB_SSH_USER";

/// The user to log in as in the workspace: `$GPULAB_SSH_USER` ([`USER_ENV`]), else `root`, the user the
/// workspace image's sshd admits.
pub fn workspace_user() -> String {
    std::env::var(USER_ENV)
        .ok()
        .map(|user| user.trim().to_string())
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "root".into())
}

/// Knobs for throughput. The defaults are measured against OpenSSH on loopback; see the module notes.
#[derive(Debug, Clone)]
pub struct SshTuning {
    /// The receive window of each channel, in bytes: how much the server may send before we acknowledge.
    pub window_size: u32,
    /// The largest SSH packet we accept, in bytes.
    pub max_packet_size: u32,
    /// SFTP reads or writes in flight per file.
    pub sftp_requests_in_flight: usize,
    /// Ciphers in order of preference; the first the server also offers is used.
    pub ciphers: Vec<cipher::Name>,
}

impl Default for SshTuning {
    fn default() -> Self {
        SshTuning {
            window_size: 16 * 1024 * 1024,
            max_packet_size: 65535,
            sftp_requests_in_flight: 64,
            // AES-GCM runs on the CPU's AES instructions and needs no separate MAC; ChaCha20-Poly1305 is
            // the fallback for CPUs without them.
            ciphers: vec![
                cipher::AES_128_GCM,
                cipher::AES_256_GCM,
                cipher::CHACHA20_POLY1305,
                cipher::AES_128_CTR,
                cipher::AES_256_CTR,
            ],
        }
    }
}

/// How to log in and what to trust.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The user to log in as.
    pub user: String,
    /// How to authenticate.
    pub auth: SshAuth,
    /// How the server's host key is checked.
    pub host_key: HostKeyPolicy,
    /// Session channels (execs, copies) open at once; more wait. Keep it under the server's `MaxSessions`.
    pub max_sessions: usize,
    /// How long connecting, the key exchange and authentication may take together.
    pub connect_timeout: Duration,
    /// Send a keepalive after this long without traffic; the connection is dropped after 3 unanswered.
    pub keepalive: Option<Duration>,
    /// Throughput knobs.
    pub tuning: SshTuning,
}

impl SshOptions {
    /// Options with the defaults: 8 sessions at once, a 30 s connect timeout, a 30 s keepalive.
    pub fn new(user: impl Into<String>, auth: SshAuth, host_key: HostKeyPolicy) -> Self {
        SshOptions {
            user: user.into(),
            auth,
            host_key,
            max_sessions: 8,
            connect_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(30)),
            tuning: SshTuning::default(),
        }
    }

    fn client_config(&self) -> client::Config {
        let defaults = russh::Preferred::default();
        let mut preferred = defaults.clone();
        preferred.key = Cow::Owned(self.host_key.preferred_algorithms(&defaults.key));
        preferred.cipher = Cow::Owned(self.tuning.ciphers.clone());
        client::Config {
            window_size: self.tuning.window_size,
            maximum_packet_size: self.tuning.max_packet_size,
            channel_buffer_size: 256,
            preferred,
            keepalive_interval: self.keepalive,
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        }
    }
}

struct Inner {
    handle: Handle<ClientHandler>,
    sessions: Arc<Semaphore>,
    host: String,
}

/// An authenticated SSH connection. Cloning is cheap and shares the connection: every clone opens its
/// channels on it, concurrently.
#[derive(Clone)]
pub struct SshSession {
    inner: Arc<Inner>,
    tuning: Arc<SshTuning>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("host", &self.inner.host)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn connect_err(host: &str, e: HandlerError) -> Error {
    match e {
        HandlerError::Refused(e) => e,
        HandlerError::Ssh(russh::Error::IO(e)) => Error::Remote {
            message: format!("ssh {host}: {e}"),
            hint: Some(
                "check that the workspace is running (`gpulab status`) and reachable".into(),
            ),
        },
        HandlerError::Ssh(russh::Error::NoCommonAlgo { kind, .. }) => Error::Remote {
            message: format!("ssh {host}: the server offers no {kind:?} algorithm gpulab supports"),
            hint: Some(
                "with a pinned host key, the server must still have a key of that type".into(),
            ),
        },
        HandlerError::Ssh(e) => Error::Remote {
            message: format!("ssh {host}: {e}"),
            hint: Some("is an SSH server listening there?".into()),
        },
    }
}

impl SshSession {
    /// Connect over TCP and authenticate.
    pub async fn connect_tcp(addr: impl ToSocketAddrs, options: SshOptions) -> Result<SshSession> {
        let stream = tokio::time::timeout(
            options.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "the TCP connection to the workspace's sshd".into(),
            waited: options.connect_timeout,
            pending: "the TCP handshake".into(),
        })?
        .map_err(|e| Error::Remote {
            message: format!("ssh: connect: {e}"),
            hint: Some(
                "check that the workspace is running (`gpulab status`) and the address is right"
                    .into(),
            ),
        })?;
        let host = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "the workspace".into());
        let _ = stream.set_nodelay(true);
        Self::connect_stream(stream, host, options).await
    }

    /// Run SSH over `stream` (a TCP connection, a port-forward, a pipe) and authenticate. `host` names the
    /// server in messages.
    pub async fn connect_stream<S>(
        stream: S,
        host: impl Into<String>,
        options: SshOptions,
    ) -> Result<SshSession>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = host.into();
        let config = Arc::new(options.client_config());
        let handler = ClientHandler::new(options.host_key.clone(), host.clone());
        let handshake = async {
            let mut handle = client::connect_stream(config, stream, handler)
                .await
                .map_err(|e| connect_err(&host, e))?;
            crate::profile::mark("ssh key exchange done");
            auth::authenticate(&mut handle, &options.user, &options.auth).await?;
            crate::profile::mark("ssh authenticated");
            Ok::<_, Error>(handle)
        };
        let handle = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("the SSH handshake with {host}"),
                waited: options.connect_timeout,
                pending: "the key exchange or authentication".into(),
            })??;
        Ok(SshSession {
            inner: Arc::new(Inner {
                handle,
                sessions: Arc::new(Semaphore::new(options.max_sessions.max(1))),
                host,
            }),
            tuning: Arc::new(options.tuning),
        })
    }

    /// True once the connection has ended; open a new session then.
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Say goodbye to the server. Channels still open end with it.
    pub async fn close(&self) -> Result<()> {
        self.inner
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| Error::Remote {
                message: format!("ssh {}: disconnect: {e}", self.inner.host),
                hint: None,
            })
    }

    /// A session channel, holding one of the `max_sessions` permits for as long as the caller keeps it.
    pub(crate) async fn open_session_channel(
        &self,
    ) -> Result<(Channel<Msg>, OwnedSemaphorePermit)> {
        let permit = self
            .inner
            .sessions
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Remote {
                message: "ssh: the session is closed".into(),
                hint: None,
            })?;
        let channel = self
            .inner
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.channel_err(e))?;
        Ok((channel, permit))
    }

    fn channel_err(&self, e: russh::Error) -> Error {
        let hint = match &e {
            russh::Error::ChannelOpenFailure(_) => {
                "the server refused a new channel: lower SshOptions::max_sessions below its MaxSessions"
            }
            _ => "the connection may have dropped; connect again",
        };
        Error::Remote {
            message: format!("ssh {}: open a channel: {e}", self.inner.host),
            hint: Some(hint.into()),
        }
    }
}

#[async_trait]
impl RemoteExec for SshSession {
    fn name(&self) -> &'static str {
        "ssh"
    }

    async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        exec::run(self, request, streams).await
    }

    async fn copy_with(
        &self,
        direction: CopyDirection,
        options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        transfer::copy(self, direction, options, reporter).await
    }

    async fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        transfer::list_dir(self, path).await
    }

    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>> {
        let channel = self
            .inner
            .handle
            .channel_open_direct_tcpip("127.0.0.1", port.into(), "127.0.0.1", 0)
            .await
            .map_err(|e| Error::Remote {
                message: format!("ssh {}: forward to port {port}: {e}", self.inner.host),
                hint: Some(
                    "is something listening on that port in the workspace, and does sshd allow TCP forwarding?"
                        .into(),
                ),
            })?;
        Ok(Box::new(channel.into_stream()))
    }
}
