//! Interactive sessions: a login shell or one command, with or without a pseudo-terminal, the local
//! terminal's resizes forwarded as `window-change` requests, and the exit code or signal back.

use std::pin::Pin;

use russh::ChannelMsg;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, copy};
use tokio::sync::mpsc;

use super::SshSession;
use super::exec::signal_name;
use crate::remote::ExitStatus;
use crate::{Error, Result};

/// The pseudo-terminal asked for on the server, as `ssh -t` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtyRequest {
    /// The terminal type, the local `TERM` (e.g. "xterm-256color").
    pub term: String,
    /// Width in columns.
    pub cols: u16,
    /// Height in rows.
    pub rows: u16,
}

impl PtyRequest {
    /// A request for a `term` terminal of `cols` × `rows`.
    pub fn new(term: impl Into<String>, cols: u16, rows: u16) -> Self {
        PtyRequest {
            term: term.into(),
            cols,
            rows,
        }
    }
}

/// The local ends of an interactive session.
pub struct ShellIo<'a> {
    /// What the user types; its end sends EOF to the server.
    pub stdin: Pin<Box<dyn AsyncRead + Send + 'a>>,
    /// Where the remote output goes (with a PTY, standard error arrives merged into it).
    pub stdout: Pin<Box<dyn AsyncWrite + Send + 'a>>,
    /// Where the remote standard error goes, without a PTY.
    pub stderr: Pin<Box<dyn AsyncWrite + Send + 'a>>,
    /// New terminal sizes, `(cols, rows)`, each forwarded as a window change; `None` when the size never
    /// changes. The CLI follows the local terminal's resizes (SIGWINCH) into it.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
}

fn channel_err(what: &str, e: russh::Error) -> Error {
    Error::Remote {
        message: format!("ssh: {what}: {e}"),
        hint: None,
    }
}

impl SshSession {
    /// Run an interactive session: the user's login shell when `command` is `None`, else that command line
    /// (handed to the remote user's shell, as `ssh host CMD` does). With `pty`, the server allocates a
    /// pseudo-terminal of that type and size, and sizes from `io.resize` follow it. Returns how the shell or
    /// command ended: its exit code, or the signal that killed it.
    ///
    /// The caller owns the local terminal: it puts it in raw mode first (the CLI does), so keystrokes,
    /// Ctrl-C included, go to the remote side.
    pub async fn shell(
        &self,
        command: Option<String>,
        pty: Option<PtyRequest>,
        io: ShellIo<'_>,
    ) -> Result<ExitStatus> {
        let (channel, _permit) = self.open_session_channel().await?;
        if let Some(pty) = &pty {
            channel
                .request_pty(true, &pty.term, pty.cols.into(), pty.rows.into(), 0, 0, &[])
                .await
                .map_err(|e| channel_err("ask for a terminal", e))?;
        }
        match &command {
            Some(line) => channel.exec(true, line.as_bytes().to_vec()).await,
            None => channel.request_shell(true).await,
        }
        .map_err(|e| channel_err("start the session", e))?;
        let (mut reader, writer) = channel.split();

        let ShellIo {
            stdin: mut input,
            mut stdout,
            mut stderr,
            resize,
        } = io;
        let writer = &writer;
        let feed = async move {
            let mut sink = writer.make_writer();
            // An error here means the channel is closing; how the session ended comes from the server.
            let _ = copy(&mut input, &mut sink).await;
            let _ = writer.eof().await;
        };
        tokio::pin!(feed);
        let mut feeding = true;
        let mut resize = resize;
        let mut status = None;
        let mut replies = u8::from(pty.is_some()) + 1;
        loop {
            tokio::select! {
                () = &mut feed, if feeding => feeding = false,
                size = async { resize.as_mut()?.recv().await }, if resize.is_some() => match size {
                    Some((cols, rows)) if pty.is_some() => writer
                        .window_change(cols.into(), rows.into(), 0, 0)
                        .await
                        .map_err(|e| channel_err("send the terminal's new size", e))?,
                    Some(_) => {}
                    None => resize = None,
                },
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        stdout
                            .write_all(&data)
                            .await
                            .map_err(|e| Error::io("write the session's output", e))?;
                        stdout
                            .flush()
                            .await
                            .map_err(|e| Error::io("write the session's output", e))?;
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        stderr
                            .write_all(&data)
                            .await
                            .map_err(|e| Error::io("write the session's standard error", e))?;
                        stderr
                            .flush()
                            .await
                            .map_err(|e| Error::io("write the session's standard error", e))?;
                    }
                    Some(ChannelMsg::Success) => replies = replies.saturating_sub(1),
                    Some(ChannelMsg::Failure) if replies > 0 => {
                        let what = if replies == 2 { "a terminal" } else if command.is_some() { "the command" } else { "a shell" };
                        return Err(Error::Remote {
                            message: format!("ssh: the server refused {what}"),
                            hint: Some("does the account have a login shell, and does sshd allow PTYs (PermitTTY)?".into()),
                        });
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        status = Some(ExitStatus::Code(exit_status as i32));
                    }
                    Some(ChannelMsg::ExitSignal { signal_name: sig, .. }) => {
                        status = Some(ExitStatus::Signal(signal_name(&sig)));
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
        }
        status.ok_or_else(|| Error::Remote {
            message: "ssh: the connection closed before the session reported how it ended".into(),
            hint: Some("the workspace may have restarted; connect again".into()),
        })
    }
}
