//! Commands over SSH session channels: the command line, streamed output, standard input, the exit status or
//! signal, and the timeout.

use std::time::Duration;

use russh::{ChannelMsg, Sig};
use tokio::io::{AsyncWriteExt, copy_buf};

use super::SshSession;
use crate::remote::{ExecRequest, ExecStreams, ExitStatus, shell_quote};
use crate::{Error, Result};

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The command line sshd hands to the user's shell. SSH runs a string, not an argv: each word is quoted, so
/// the program runs with exactly these arguments. Environment variables go through `env NAME=VALUE …`:
/// sshd accepts `setenv` requests only for names in its `AcceptEnv`, so the protocol's own way would be
/// silently dropped.
pub(crate) fn command_line(request: &ExecRequest) -> Result<String> {
    if request.argv.is_empty() {
        return Err(Error::Remote {
            message: "empty command".into(),
            hint: None,
        });
    }
    let mut words = Vec::new();
    if !request.env.is_empty() {
        words.push("env".to_string());
        for (name, value) in &request.env {
            if !valid_env_name(name) {
                return Err(Error::Remote {
                    message: format!("invalid environment variable name {name:?}"),
                    hint: Some(
                        "names are letters, digits and `_`, not starting with a digit".into(),
                    ),
                });
            }
            words.push(shell_quote(&format!("{name}={value}")));
        }
    }
    words.extend(request.argv.iter().map(|w| shell_quote(w)));
    Ok(words.join(" "))
}

/// The name of a signal, as [`ExitStatus::Signal`] carries it.
pub(crate) fn signal_name(sig: &Sig) -> &'static str {
    const OTHERS: &[&str] = &[
        "BUS", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "USR2", "POLL", "PROF", "SYS",
        "TRAP", "URG", "VTALRM", "XCPU", "XFSZ", "WINCH", "IO", "PWR", "STKFLT",
    ];
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => {
            let name = name.trim_start_matches("SIG");
            OTHERS
                .iter()
                .find(|o| **o == name)
                .copied()
                .unwrap_or("UNKNOWN")
        }
    }
}

fn describe(request: &ExecRequest) -> String {
    let line = request.argv.join(" ");
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(60).collect::<String>())
    } else {
        line
    }
}

fn channel_err(what: &str, e: russh::Error) -> Error {
    Error::Remote {
        message: format!("ssh: {what}: {e}"),
        hint: None,
    }
}

/// Run one command on its own channel, streaming as it goes.
pub(crate) async fn run(
    session: &SshSession,
    request: ExecRequest,
    streams: ExecStreams<'_>,
) -> Result<ExitStatus> {
    let line = command_line(&request)?;
    let (channel, _permit) = session.open_session_channel().await?;
    channel
        .exec(true, line.into_bytes())
        .await
        .map_err(|e| channel_err("start the command", e))?;
    let (mut reader, writer) = channel.split();

    let ExecStreams {
        stdin,
        mut stdout,
        mut stderr,
    } = streams;
    let writer = &writer;
    let feed = async move {
        if let Some(mut input) = stdin {
            let mut sink = writer.make_writer();
            // Reads as large as the channel's packets allow.
            let mut input = tokio::io::BufReader::with_capacity(256 * 1024, &mut input);
            // An error here means the command stopped reading; its exit status says what happened.
            let _ = copy_buf(&mut input, &mut sink).await;
        }
        let _ = writer.eof().await;
    };
    tokio::pin!(feed);
    let mut feeding = true;

    let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
    tokio::pin!(sleep);

    let mut status = None;
    loop {
        tokio::select! {
            () = &mut feed, if feeding => feeding = false,
            () = &mut sleep, if deadline.is_some() => {
                let _ = writer.signal(Sig::KILL).await;
                let _ = writer.close().await;
                return Err(Error::Timeout {
                    what: format!("`{}`", describe(&request)),
                    waited: request.timeout.unwrap_or_default(),
                    pending: "the command's exit (it was sent SIGKILL)".into(),
                });
            }
            msg = reader.wait() => match msg {
                Some(ChannelMsg::Data { data }) => stdout
                    .write_all(&data)
                    .await
                    .map_err(|e| Error::io("write the command's standard output", e))?,
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => stderr
                    .write_all(&data)
                    .await
                    .map_err(|e| Error::io("write the command's standard error", e))?,
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    status = Some(ExitStatus::Code(exit_status as i32));
                }
                Some(ChannelMsg::ExitSignal { signal_name: sig, .. }) => {
                    status = Some(ExitStatus::Signal(signal_name(&sig)));
                }
                Some(ChannelMsg::Failure) => {
                    return Err(Error::Remote {
                        message: format!("the server refused to run `{}`", describe(&request)),
                        hint: None,
                    });
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
    }
    stdout
        .flush()
        .await
        .map_err(|e| Error::io("write the command's standard output", e))?;
    stderr
        .flush()
        .await
        .map_err(|e| Error::io("write the command's standard error", e))?;
    status.ok_or_else(|| Error::Remote {
        message: format!(
            "`{}`: the connection closed before the command reported how it ended",
            describe(&request)
        ),
        hint: Some("the workspace may have restarted; run the command again".into()),
    })
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn env_goes_through_env() {
        let request = ExecRequest {
            argv: vec!["printenv".into(), "A".into()],
            env: vec![("A".into(), "x y".into())],
            ..Default::default()
        };
        assert_eq!(command_line(&request).unwrap(), "env 'A=x y' printenv A");
        let bad = ExecRequest {
            argv: vec!["true".into()],
            env: vec![("1A".into(), String::new())],
            ..Default::default()
        };
        assert!(command_line(&bad).is_err());
        assert!(command_line(&ExecRequest::default()).is_err());
    }

    #[test]
    fn signals_have_static_names() {
        assert_eq!(signal_name(&Sig::KILL), "KILL");
        assert_eq!(signal_name(&Sig::Custom("USR2".into())), "USR2");
        assert_eq!(signal_name(&Sig::Custom("WHAT".into())), "UNKNOWN");
    }
}
