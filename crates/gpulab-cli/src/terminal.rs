//! The local terminal for `gpulab ssh`: raw mode that is restored on every way out, the terminal's size,
//! and its resizes (SIGWINCH) as a channel of sizes for `ShellIo::resize`. A concern of the command
//! for humans only: the library and the Python bindings never touch a terminal.
//!
//! Raw mode and the size come from rustix's `termios` API: a safe, thin wrapper over `tcgetattr`,
//! `tcsetattr` and `TIOCGWINSZ` that is already in the dependency tree (tokio, tempfile), so it adds
//! nothing to build. crossterm would bring its own event loop, mio and signal-hook for the three calls
//! used here; SIGWINCH comes from tokio's own signal handling instead.
//!
//! `tokio::io::stdin()` reads on a blocking thread that stays blocked in `read` after the session ends, so
//! the CLI should exit the process (after dropping the guard) rather than wait for the runtime to shut down.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, Once};

use rustix::termios::{self, OptionalActions, Termios};
use tokio::sync::mpsc;

use gpulab_core::remote::ExitStatus;
use gpulab_core::remote::ssh::{PtyRequest, ShellIo, SshSession};
use gpulab_core::{Error, Result};

/// The settings to put back if the process panics while raw mode is on: the panic hook restores them before
/// the message is printed, so it is readable, and even under `panic = "abort"`, where no destructor runs.
static SAVED: Mutex<Option<(OwnedFd, Termios)>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut saved) = SAVED.lock()
                && let Some((fd, original)) = saved.take()
            {
                let _ = termios::tcsetattr(&fd, OptionalActions::Now, &original);
            }
            previous(info);
        }));
    });
}

/// The local terminal in raw mode: no echo, no line editing, no signals from Ctrl-C or Ctrl-Z, so every key
/// goes to the remote side. Dropping it restores the settings it found, on every way out of the scope that
/// holds it: a return, `?`, or a panic (a panic hook restores them too, before the message prints).
#[derive(Debug)]
pub(crate) struct RawMode {
    fd: OwnedFd,
    original: Termios,
    /// Whether this guard put its settings in `SAVED` for the panic hook.
    owner: bool,
}

impl RawMode {
    /// Raw mode on standard input, or `None` when standard input is not a terminal (piped input needs no
    /// raw mode).
    pub(crate) fn enable_stdin() -> Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !termios::isatty(stdin.as_fd()) {
            return Ok(None);
        }
        Self::enable(stdin.as_fd()).map(Some)
    }

    /// Raw mode on the terminal `fd`.
    pub(crate) fn enable(fd: impl AsFd) -> Result<RawMode> {
        let fd = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicate the terminal's descriptor", e))?;
        let original = termios::tcgetattr(&fd)
            .map_err(|e| Error::io("read the terminal's settings", e.into()))?;
        let mut raw = original.clone();
        raw.make_raw();
        install_panic_hook();
        let dup = fd
            .try_clone()
            .map_err(|e| Error::io("duplicate the terminal's descriptor", e))?;
        termios::tcsetattr(&fd, OptionalActions::Now, &raw)
            .map_err(|e| Error::io("put the terminal in raw mode", e.into()))?;
        // A nested guard leaves the outermost settings, the ones the user had, for the panic hook.
        let owner = match SAVED.lock() {
            Ok(mut saved) if saved.is_none() => {
                *saved = Some((dup, original.clone()));
                true
            }
            _ => false,
        };
        Ok(RawMode {
            fd,
            original,
            owner,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // `Drain` waits for pending output first, so the last bytes of the session print in raw mode.
        let _ = termios::tcsetattr(&self.fd, OptionalActions::Drain, &self.original);
        if self.owner
            && let Ok(mut saved) = SAVED.lock()
        {
            *saved = None;
        }
    }
}

/// The size of the terminal on `fd`, `(cols, rows)`, or `None` when it is not a terminal or has no size.
pub(crate) fn size_of(fd: impl AsFd) -> Option<(u16, u16)> {
    termios::tcgetwinsize(fd)
        .ok()
        .filter(|w| w.ws_col > 0 && w.ws_row > 0)
        .map(|w| (w.ws_col, w.ws_row))
}

/// The size of the local terminal, `(cols, rows)`: standard output's, else standard input's.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    size_of(std::io::stdout().as_fd()).or_else(|| size_of(std::io::stdin().as_fd()))
}

/// True when standard input is a terminal.
pub(crate) fn stdin_is_terminal() -> bool {
    termios::isatty(std::io::stdin().as_fd())
}

/// The PTY to ask for, as `ssh` does: one when standard input is a terminal, with its size and `$TERM`
/// (`xterm-256color` when unset); `None` otherwise.
pub(crate) fn pty_request() -> Option<PtyRequest> {
    if !stdin_is_terminal() {
        return None;
    }
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "xterm-256color".into());
    Some(PtyRequest::new(term, cols, rows))
}

/// The local terminal's new size, `(cols, rows)`, each time it changes (SIGWINCH). The task that follows
/// the signal ends when the receiver is dropped. Must be called inside a Tokio runtime.
pub(crate) fn resize_events() -> Result<mpsc::Receiver<(u16, u16)>> {
    resize_events_with(terminal_size)
}

/// [`resize_events`] with the size read by `size` (for a terminal other than the process's own).
pub(crate) fn resize_events_with(
    size: impl Fn() -> Option<(u16, u16)> + Send + 'static,
) -> Result<mpsc::Receiver<(u16, u16)>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut winch = signal(SignalKind::window_change())
        .map_err(|e| Error::io("watch the terminal's size (SIGWINCH)", e))?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = winch.recv() => {
                    if got.is_none() {
                        break;
                    }
                    if let Some(new) = size()
                        && tx.send(new).await.is_err()
                    {
                        break;
                    }
                }
                () = tx.closed() => break,
            }
        }
    });
    Ok(rx)
}

/// `gpulab ssh [-t|-T] [-- CMD]` in one call: the session on this process's own terminal. A PTY is asked
/// for as `ssh` does: with `tty` unset, when there is no command and standard input is a terminal;
/// `Some(true)` (`-t`) asks for one whenever standard input is a terminal, `Some(false)` (`-T`) never.
/// With a PTY the terminal goes into raw mode, restored before this returns (or unwinds), and its resizes
/// are followed. Returns how the session ended; exit with [`ExitStatus::shell_code`].
pub(crate) async fn interactive_session(
    ssh: &SshSession,
    command: Option<String>,
    tty: Option<bool>,
) -> Result<ExitStatus> {
    let want = tty.unwrap_or(command.is_none());
    let pty = if want { pty_request() } else { None };
    let raw = match pty {
        Some(_) => RawMode::enable_stdin()?,
        None => None,
    };
    let resize = match pty {
        Some(_) => Some(resize_events()?),
        None => None,
    };
    let io = ShellIo {
        stdin: Box::pin(tokio::io::stdin()),
        stdout: Box::pin(tokio::io::stdout()),
        stderr: Box::pin(tokio::io::stderr()),
        resize,
    };
    let status = ssh.shell(command, pty, io).await;
    drop(raw);
    status
}

/// Ask for the passphrase of the SSH key at `path` on the controlling terminal (`/dev/tty`, as OpenSSH
/// does, so it works with stdin redirected), without echoing it. `None` when there is no terminal or the
/// user enters nothing: the caller then gives up on the key. A [`crate::remote::ssh::PassphraseFn`].
pub(crate) fn prompt_passphrase(path: &std::path::Path) -> Option<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let original = termios::tcgetattr(&tty).ok()?;
    let mut quiet = original.clone();
    quiet.local_modes.remove(termios::LocalModes::ECHO);
    // The settings come back on every way out, as with raw mode.
    struct Restore<'a>(&'a std::fs::File, Termios);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = termios::tcsetattr(self.0, OptionalActions::Now, &self.1);
        }
    }
    let mut writer = &tty;
    write!(writer, "Enter passphrase for key '{}': ", path.display()).ok()?;
    writer.flush().ok()?;
    let line = {
        let _restore = Restore(&tty, original);
        termios::tcsetattr(&tty, OptionalActions::Now, &quiet).ok()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line).ok()?;
        line
    };
    let _ = writeln!(writer);
    let passphrase = line.trim_end_matches(['\r', '\n']).to_string();
    (!passphrase.is_empty()).then_some(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::termios::{LocalModes, Winsize};

    /// A pseudo-terminal pair: (controller, the terminal side).
    fn pty_pair() -> (OwnedFd, OwnedFd) {
        let (controller, terminal) = gpulab_testkit::pty_pair(80, 24);
        (controller.into(), terminal.into())
    }

    fn is_canonical(fd: &OwnedFd) -> bool {
        let t = termios::tcgetattr(fd).unwrap();
        t.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
    }

    #[test]
    fn raw_mode_is_restored_on_drop_and_on_panic() {
        let (_controller, terminal) = pty_pair();
        assert!(is_canonical(&terminal));
        {
            let _raw = RawMode::enable(&terminal).unwrap();
            assert!(!is_canonical(&terminal));
        }
        assert!(is_canonical(&terminal), "restored on drop");

        let t = terminal.try_clone().unwrap();
        let result = std::panic::catch_unwind(move || {
            let _raw = RawMode::enable(&t).unwrap();
            assert!(!is_canonical(&t));
            panic!("in the middle of a session");
        });
        assert!(result.is_err());
        assert!(is_canonical(&terminal), "restored on panic");

        let raw = RawMode::enable(&terminal).unwrap();
        drop(raw);
        assert!(is_canonical(&terminal), "restored explicitly");
    }

    #[tokio::test]
    async fn sizes_are_read_and_resizes_followed() {
        let (_controller, terminal) = pty_pair();
        let set = |cols, rows| {
            let w = Winsize {
                ws_col: cols,
                ws_row: rows,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            termios::tcsetwinsize(&terminal, w).unwrap();
        };
        set(120, 40);
        assert_eq!(size_of(&terminal), Some((120, 40)));

        let watched = terminal.try_clone().unwrap();
        let mut rx = resize_events_with(move || size_of(&watched)).unwrap();
        set(90, 30);
        // The kernel sends SIGWINCH to the terminal's foreground group only; this test's pty is not our
        // controlling terminal, so raise it ourselves.
        let kill = std::process::Command::new("kill")
            .args(["-WINCH", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        assert_eq!(rx.recv().await, Some((90, 30)));
    }
}
