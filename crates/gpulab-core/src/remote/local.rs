//! [`RemoteExec`] on the machine gpulab runs on: commands through `tokio::process`, copies through the
//! file system, tunnels to `127.0.0.1`. It lets code written for a workspace (the GPU checks above all,
//! `gpulab test --local`) run unchanged here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    CopyDirection, CopyOptions, ExecRequest, ExecStreams, ExitStatus, RemoteExec, TransferStats,
    Tunnel,
};
use crate::events::{ByteProgress, Reporter};
use crate::{Error, Result};

/// Runs commands, copies and tunnels on this machine, as the user gpulab runs as. Commands inherit
/// gpulab's environment and working directory, plus the request's variables; "the workspace" is this
/// machine's file system (`~` is `$HOME`, a relative path is relative to the working directory).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl LocalExec {
    /// The local transport.
    pub fn new() -> Self {
        LocalExec
    }
}

/// Linux's ENOEXEC: a file the kernel cannot run (not a program, or one for another machine).
const ENOEXEC: i32 = 8;

/// How a shell reports a command it could not start: 127 for one not found, 126 for one it may not or
/// cannot run.
fn spawn_failure(program: &str, error: &std::io::Error) -> Option<(i32, String)> {
    match error.kind() {
        std::io::ErrorKind::NotFound => Some((
            127,
            format!(
                "gpulab: {program}: not found on this machine (not a file, or not on the PATH)\n"
            ),
        )),
        std::io::ErrorKind::PermissionDenied => Some((
            126,
            format!("gpulab: {program}: permission denied (not executable)\n"),
        )),
        _ if cfg!(target_os = "linux") && error.raw_os_error() == Some(ENOEXEC) => Some((
            126,
            format!("gpulab: {program}: cannot execute: not a program this machine can run\n"),
        )),
        _ => None,
    }
}

/// The exit status of a finished child: its code, or the signal that killed it (an unnamed signal as
/// the shell's 128 + its number).
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    if let Some(code) = status.code() {
        return ExitStatus::Code(code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                1 => "HUP",
                2 => "INT",
                3 => "QUIT",
                6 => "ABRT",
                9 => "KILL",
                11 => "SEGV",
                13 => "PIPE",
                14 => "ALRM",
                15 => "TERM",
                other => return ExitStatus::Code(128 + other),
            };
            return ExitStatus::Signal(name);
        }
    }
    ExitStatus::Code(-1)
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<u64> {
    let copied = tokio::io::copy(&mut from, &mut to).await?;
    to.flush().await?;
    Ok(copied)
}

/// `path` on this machine, with `~` and `~/…` as the home directory.
fn expand_home(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match path.strip_prefix('~') {
        Some("") => home().unwrap_or_else(|| PathBuf::from(path)),
        Some(rest) if rest.starts_with('/') => match home() {
            Some(home) => home.join(rest.trim_start_matches('/')),
            None => PathBuf::from(path),
        },
        _ => PathBuf::from(path),
    }
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}

/// A name beside `target` for a file being written, unique within this process.
fn temporary_beside(target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.gpulab-cp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Give `path` the modification time, then the permissions, of `from` (in that order: the time is set
/// through an open file, which a mode without read access would refuse).
fn copy_attributes(path: &Path, from: &std::fs::Metadata) -> Result<()> {
    if let Ok(modified) = from.modified() {
        let file = std::fs::File::open(path)
            .map_err(io_error(format!("open {} to set its time", path.display())))?;
        file.set_modified(modified).map_err(io_error(format!(
            "set the modification time of {}",
            path.display()
        )))?;
    }
    std::fs::set_permissions(path, from.permissions()).map_err(io_error(format!(
        "set the permissions of {}",
        path.display()
    )))
}

/// One thing to copy: a path below the source, and what it is.
struct Item {
    rel: PathBuf,
    meta: std::fs::Metadata,
}

/// Everything below the directory `root`, parents before children.
async fn walk(root: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(io_error(format!("list {}", dir.display())))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_error(format!("list {}", dir.display())))?
        {
            let rel = rel.join(entry.file_name());
            let meta = tokio::fs::symlink_metadata(root.join(&rel))
                .await
                .map_err(io_error(format!("read {}", root.join(&rel).display())))?;
            if meta.is_dir() {
                pending.push(rel.clone());
            }
            items.push(Item { rel, meta });
        }
    }
    Ok(items)
}

/// Copy the file `from` to `to` through a temporary file beside it, renamed into place when complete.
async fn copy_file(
    from: &Path,
    to: &Path,
    meta: &std::fs::Metadata,
    progress: &mut ByteProgress<'_>,
) -> Result<u64> {
    let temporary = temporary_beside(to);
    let result = async {
        let mut input = tokio::fs::File::open(from)
            .await
            .map_err(io_error(format!("open {}", from.display())))?;
        let mut output = tokio::fs::File::create(&temporary)
            .await
            .map_err(io_error(format!("create {}", temporary.display())))?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let n = input
                .read(&mut buffer)
                .await
                .map_err(io_error(format!("read {}", from.display())))?;
            if n == 0 {
                break;
            }
            output
                .write_all(&buffer[..n])
                .await
                .map_err(io_error(format!("write {}", temporary.display())))?;
            copied += n as u64;
            progress.add(n as u64);
        }
        output
            .sync_all()
            .await
            .map_err(io_error(format!("write {}", temporary.display())))?;
        drop(output);
        copy_attributes(&temporary, meta)?;
        tokio::fs::rename(&temporary, to)
            .await
            .map_err(io_error(format!("rename into {}", to.display())))?;
        Ok(copied)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    result
}

/// Recreate the link `from` at `to` (through a temporary name, so an existing `to` is replaced whole).
async fn copy_link(from: &Path, to: &Path) -> Result<()> {
    let target = tokio::fs::read_link(from)
        .await
        .map_err(io_error(format!("read the link {}", from.display())))?;
    let temporary = temporary_beside(to);
    #[cfg(unix)]
    tokio::fs::symlink(&target, &temporary)
        .await
        .map_err(io_error(format!("create the link {}", temporary.display())))?;
    #[cfg(not(unix))]
    return Err(Error::Remote {
        message: format!("cannot copy the link {}: links need Unix", from.display()),
        hint: None,
    });
    tokio::fs::rename(&temporary, to)
        .await
        .map_err(io_error(format!("rename into {}", to.display())))
}

/// Copy `source` to `dest` on this machine, as the workspace transports do: an existing directory
/// `dest` receives `source` inside it; a directory is merged into an existing one; every file arrives
/// whole or not at all; permissions and modification times are kept.
async fn copy_path(source: &Path, dest: &Path, reporter: &dyn Reporter) -> Result<TransferStats> {
    let started = Instant::now();
    let meta = tokio::fs::metadata(source)
        .await
        .map_err(io_error(format!("read {}", source.display())))?;
    let target = match tokio::fs::metadata(dest).await {
        Ok(d) if d.is_dir() => match source.file_name() {
            Some(name) => dest.join(name),
            None => dest.to_path_buf(),
        },
        _ => dest.to_path_buf(),
    };
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_error(format!("create {}", parent.display())))?;
    }
    let existing = tokio::fs::metadata(&target).await.ok();
    let mut stats = TransferStats::default();
    if meta.is_file() {
        if existing.is_some_and(|m| m.is_dir()) {
            return Err(Error::Remote {
                message: format!(
                    "cannot copy the file {} onto the directory {}",
                    source.display(),
                    target.display()
                ),
                hint: None,
            });
        }
        let mut progress = ByteProgress::new(
            reporter,
            format!("copy {}", source.display()),
            Some(meta.len()),
        );
        stats.bytes = copy_file(source, &target, &meta, &mut progress).await?;
        stats.files = 1;
        progress.finish();
    } else if meta.is_dir() {
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            return Err(Error::Remote {
                message: format!(
                    "cannot copy the directory {} onto the file {}",
                    source.display(),
                    target.display()
                ),
                hint: None,
            });
        }
        let items = walk(source).await?;
        let total = items
            .iter()
            .filter(|i| i.meta.is_file())
            .map(|i| i.meta.len())
            .sum();
        let mut progress =
            ByteProgress::new(reporter, format!("copy {}", source.display()), Some(total));
        tokio::fs::create_dir_all(&target)
            .await
            .map_err(io_error(format!("create {}", target.display())))?;
        for item in &items {
            let (from, to) = (source.join(&item.rel), target.join(&item.rel));
            let kind = item.meta.file_type();
            if kind.is_dir() {
                tokio::fs::create_dir_all(&to)
                    .await
                    .map_err(io_error(format!("create {}", to.display())))?;
            } else if kind.is_symlink() {
                copy_link(&from, &to).await?;
            } else if kind.is_file() {
                stats.bytes += copy_file(&from, &to, &item.meta, &mut progress).await?;
                stats.files += 1;
            }
        }
        progress.finish();
        // Directories last, deepest first: writing into a directory changes its modification time.
        for item in items.iter().rev().filter(|i| i.meta.is_dir()) {
            copy_attributes(&target.join(&item.rel), &item.meta)?;
        }
        copy_attributes(&target, &meta)?;
    } else {
        return Err(Error::Remote {
            message: format!("{} is not a regular file or directory", source.display()),
            hint: None,
        });
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

#[async_trait]
impl RemoteExec for LocalExec {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn exec_streaming(
        &self,
        request: ExecRequest,
        mut streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        let Some(program) = request.argv.first() else {
            return Err(Error::Remote {
                message: "no command to run".into(),
                hint: None,
            });
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(&request.argv[1..])
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .stdin(if streams.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timeout, or the caller giving up, drops the future: the command goes with it.
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let Some((code, message)) = spawn_failure(program, &e) else {
                    return Err(Error::Remote {
                        message: format!("start {program} on this machine: {e}"),
                        hint: None,
                    });
                };
                let _ = streams.stderr.write_all(message.as_bytes()).await;
                let _ = streams.stderr.flush().await;
                return Ok(ExitStatus::Code(code));
            }
        };
        let run = async {
            let stdout = child.stdout.take().expect("stdout is piped");
            let stderr = child.stderr.take().expect("stderr is piped");
            let stdin = child.stdin.take();
            {
                let feed = async {
                    if let (Some(input), Some(mut writer)) = (streams.stdin, stdin) {
                        // A command that exits without reading all its input is not an error.
                        match pump(input, &mut writer).await {
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                            Err(e) => return Err(e),
                        }
                        let _ = writer.shutdown().await;
                    }
                    Ok::<_, std::io::Error>(())
                };
                let outputs = async {
                    tokio::try_join!(pump(stdout, streams.stdout), pump(stderr, streams.stderr))
                };
                tokio::pin!(feed, outputs);
                let stream_error = |e: std::io::Error| Error::Remote {
                    message: format!("{program}: output: {e}"),
                    hint: None,
                };
                // The command is done when its output ends; input it never read (a terminal left open)
                // must not keep us waiting.
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
            let status = child.wait().await.map_err(|e| Error::Remote {
                message: format!("wait for {program}: {e}"),
                hint: None,
            })?;
            Ok(exit_status(status))
        };
        match request.timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .map_err(|_| Error::Timeout {
                    what: format!("{:?}", request.argv),
                    waited: limit,
                    pending: "the command had not finished (it was killed)".into(),
                })?,
            None => run.await,
        }
    }

    async fn copy_with(
        &self,
        direction: CopyDirection,
        _options: &CopyOptions,
        reporter: &dyn Reporter,
    ) -> Result<TransferStats> {
        // The options choose how a remote copy travels; a local copy has nothing to choose.
        match direction {
            CopyDirection::Upload { local, remote } => {
                copy_path(&local, &expand_home(&remote), reporter).await
            }
            CopyDirection::Download { remote, local } => {
                copy_path(&expand_home(&remote), &local, reporter).await
            }
        }
    }

    async fn tunnel(&self, port: u16) -> Result<Box<dyn Tunnel>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| Error::Remote {
                message: format!("connect to 127.0.0.1:{port} on this machine: {e}"),
                hint: Some("is something listening on that port?".into()),
            })?;
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::{Event, Recorder};

    fn sh(script: &str) -> ExecRequest {
        ExecRequest {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn commands_run_here_with_input_environment_and_exit_codes() {
        let exec = LocalExec::new();
        let mut request = sh("read line; echo \"got $line and $GPULAB_X\"; echo oops >&2; exit 3");
        request.stdin = Some(b"hello\n".to_vec());
        request.env = vec![("GPULAB_X".into(), "42".into())];
        let out = exec.exec(request).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello and 42\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
        assert_eq!(out.status, ExitStatus::Code(3));

        // Input the command never reads does not hold it up, and a big one is not an error.
        let mut request = sh("echo done");
        request.stdin = Some(vec![b'x'; 4 << 20]);
        let out = exec.exec(request).await.unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.status),
            (&b"done\n"[..], ExitStatus::Code(0))
        );

        let out = exec.exec(sh("kill -TERM $$")).await.unwrap();
        assert_eq!(out.status, ExitStatus::Signal("TERM"));
        assert_eq!(out.status.shell_code(), 143);
    }

    #[tokio::test]
    async fn a_missing_program_is_exit_127_as_in_a_shell_and_a_timeout_kills() {
        let exec = LocalExec::new();
        let out = exec
            .exec(ExecRequest {
                argv: vec!["gpulab-no-such-program".into(), "-".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(out.status, ExitStatus::Code(127));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("gpulab-no-such-program: not found"),
            "{out:?}"
        );
        // An executable file that is no program: 126, as a shell says "cannot execute".
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, [0u8, 1, 2, 3]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
            let out = exec
                .exec(ExecRequest {
                    argv: vec![text.display().to_string()],
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(out.status, ExitStatus::Code(126), "{out:?}");
        }

        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut request = sh(&format!("echo $$ > {}; exec sleep 600", pid_file.display()));
        request.timeout = Some(Duration::from_secs(2));
        let err = exec.exec(request).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        // Killed, not left behind: its process is gone, or a zombie waiting to be reaped.
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = Path::new("/proc").join(pid.trim()).join("stat");
        if Path::new("/proc/self/stat").exists() {
            let dead = || {
                std::fs::read_to_string(&stat).map_or(true, |s| {
                    s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
                })
            };
            for _ in 0..100 {
                if dead() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(dead(), "the timed-out command is still running: {stat:?}");
        }
    }

    #[tokio::test]
    async fn copies_keep_files_whole_with_modes_and_merge_directories() {
        let exec = LocalExec::new();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), "alpha").unwrap();
        std::fs::write(src.join("sub/b.bin"), vec![7u8; 3 << 20]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(src.join("a.txt"), std::fs::Permissions::from_mode(0o750))
                .unwrap();
            std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        }
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let recorder = Recorder::default();
        let stats = exec
            .copy(
                CopyDirection::Upload {
                    local: src.clone(),
                    remote: dest.display().to_string(),
                },
                &recorder,
            )
            .await
            .unwrap();
        // An existing directory receives the source inside it.
        let copied = dest.join("src");
        assert_eq!((stats.files, stats.bytes), (2, 5 + (3 << 20)));
        assert_eq!(
            std::fs::read_to_string(copied.join("a.txt")).unwrap(),
            "alpha"
        );
        assert_eq!(
            std::fs::read(copied.join("sub/b.bin")).unwrap().len(),
            3 << 20
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(copied.join("a.txt"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o750);
            assert_eq!(
                std::fs::read_link(copied.join("link")).unwrap(),
                Path::new("a.txt")
            );
        }
        let source_time = std::fs::metadata(src.join("sub/b.bin"))
            .unwrap()
            .modified()
            .unwrap();
        let copy_time = std::fs::metadata(copied.join("sub/b.bin"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(source_time, copy_time);
        let last = recorder.events().into_iter().last();
        assert!(
            matches!(last, Some(Event::Progress { done, total: Some(total), .. }) if done == total),
            "{last:?}"
        );
        // No temporary files left beside the copies.
        let names: Vec<String> = std::fs::read_dir(&copied)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("gpulab-cp")), "{names:?}");

        // Down, to a new name; then a directory onto a file is refused and leaves the file alone.
        let back = dir.path().join("back.txt");
        exec.copy(
            CopyDirection::Download {
                remote: copied.join("a.txt").display().to_string(),
                local: back.clone(),
            },
            &Recorder::default(),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "alpha");
        let err = exec
            .copy(
                CopyDirection::Upload {
                    local: src.clone(),
                    remote: back.display().to_string(),
                },
                &Recorder::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("onto the file"), "{err}");
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "alpha");
        let missing = exec
            .copy(
                CopyDirection::Upload {
                    local: dir.path().join("missing"),
                    remote: dest.display().to_string(),
                },
                &Recorder::default(),
            )
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    #[tokio::test]
    async fn directories_list_and_tunnels_reach_local_ports() {
        let exec = LocalExec::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x y"), "").unwrap();
        std::fs::write(dir.path().join(".hidden"), "").unwrap();
        let mut names = exec
            .list_dir(&dir.path().display().to_string())
            .await
            .unwrap()
            .unwrap();
        names.sort();
        assert_eq!(names, [".hidden", "x y"]);
        assert_eq!(
            exec.list_dir(&dir.path().join("x y").display().to_string())
                .await
                .unwrap(),
            None
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            socket.read_exact(&mut buf).await.unwrap();
            socket.write_all(&buf).await.unwrap();
        });
        let mut tunnel = exec.tunnel(port).await.unwrap();
        tunnel.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        tunnel.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
        server.await.unwrap();
        drop(tunnel);

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = exec.tunnel(port).await.err().unwrap();
        assert!(err.to_string().contains("is something listening"), "{err}");
    }

    #[test]
    fn home_is_expanded_like_the_workspace_does() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if let Some(home) = home {
            assert_eq!(expand_home("~"), home);
            assert_eq!(expand_home("~/a/b"), home.join("a/b"));
        }
        assert_eq!(expand_home("~other/x"), PathBuf::from("~other/x"));
        assert_eq!(expand_home("rel/x"), PathBuf::from("rel/x"));
    }
}
