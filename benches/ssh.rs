//! gpulab's SSH transport against OpenSSH, side by side on the same sshd in the same run: a 512 MiB upload
//! and download against `scp` with the same cipher (AES-128-GCM), and 100 sequential short commands over
//! gpulab's one reused connection against 100 runs of `ssh host true`.
//!
//! The command loop runs twice: as this user, whose login shell is whatever this machine's dotfiles make it,
//! and, when run as root, as `gpulab-bench`, a system account the bench creates (once) whose `~/.bashrc`
//! returns at once for non-interactive shells, as root's does in the workspace image. sshd runs every
//! command through the login shell, and Debian's bash sources `~/.bashrc` for commands from sshd, so each
//! variant also prints one local `bash -c true` with sshd's environment: the floor under any command.
//!
//! Reproduce: `cargo bench -p gpulab-benches --bench ssh` (needs openssh-server and openssh-client; root for
//! the lean variant). Profile one direction of gpulab's transfers alone with
//! `GPULAB_SSH_BENCH=upload` (or `download`) `perf record --call-graph dwarf -- <the bench binary> --bench`,
//! then `perf report --time` from the first AES-GCM sample (before it, the bench writes its 512 MiB file).
//!
//! One run (2-core container shared with other builds, load 1–2; OpenSSH 9.2p1; loopback; median of 3
//! transfers; an earlier run under load 2–3 gave upload 1.78×, download 1.60×, commands 2.3× and 58×):
//!
//! ```text
//! ssh bench: 512 MiB, cipher aes128-gcm@openssh.com, median of 3; 100 commands
//! gpulab upload (SFTP)                          384 MiB/s     1.33 s    1.80 CPU s/GiB
//! scp upload                                    349 MiB/s     1.47 s    2.12 CPU s/GiB
//! gpulab download (SFTP)                        562 MiB/s     0.91 s    1.52 CPU s/GiB
//! scp download                                  343 MiB/s     1.49 s    2.08 CPU s/GiB
//! gpulab 100 × exec true as root              113.4 ms each, 11.34 s total, 0.04 CPU s (connect once: 30 ms)
//! 100 × ssh root@host true                    331.6 ms each, 33.16 s total, 9.75 CPU s
//! local bash -c true as root                  119.0 ms (floor: the login shell alone, median of 11)
//! gpulab 100 × exec true as gpulab-bench        3.8 ms each, 0.38 s total, 0.04 CPU s (connect once: 40 ms)
//! 100 × ssh gpulab-bench@host true            243.3 ms each, 24.33 s total, 10.17 CPU s
//! local bash -c true as gpulab-bench            3.6 ms (floor: the login shell alone, median of 11)
//! ratios: upload 1.10× scp, download 1.64× scp; commands faster than spawning ssh: as root 2.9×, as gpulab-bench 64.7×
//! ```
//!
//! What limits them:
//! - **Commands**: gpulab's client spends 0.4 ms of CPU a command; each takes what the login shell takes
//!   (113 ms against a 119 ms floor as root, whose `.bashrc` here runs `pyenv init`; 3.8 ms against 3.6 ms
//!   as `gpulab-bench`). `ssh host true` adds a process, key exchange and authentication (~100 ms of client
//!   CPU a run) to the same shell. With a lean login shell, as in the workspace, the 10× goal holds (~60×).
//! - **Transfers**: the two cores are the ceiling, shared by gpulab, sshd and other jobs (`perf` during
//!   gpulab's transfers: ~45% of samples in gpulab, ~55% in sshd). On gpulab's side (upload / download):
//!   kernel TCP and file I/O 30% / 38%, thread wake-ups (epoll, futex, context switches between the copy
//!   loop, russh-sftp's task, russh's session task and tokio's file threads) 22% / 23%, memcpy 18% / 14%
//!   (on upload each byte is copied four times in user space: tokio's file buffer, russh-sftp's packet,
//!   russh's channel `Bytes`, its packet writer; five on download), AES-GCM 10% / 10%, tokio's scheduler
//!   9% / 5%, russh and russh-sftp logic 3% / 2%, gpulab's own code under 1%. Measured
//!   alternatives were no better: 16 or 256 requests in flight, a 2 MiB window (loopback has no latency to
//!   hide), and ChaCha20-Poly1305 (25–35% slower). Run-to-run spread is ±15%.
//!
//! CPU is this process's (gpulab's client) or scp's and its ssh child's, user + system, from /proc; the
//! server's sshd is the same process for both and not counted. Both sides speak SFTP (OpenSSH 9's scp
//! does by default).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpulab_core::events::Silent;
use gpulab_core::remote::ssh::{HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key};
use gpulab_core::remote::{CopyDirection, ExecRequest, RemoteExec};
use gpulab_testkit::sshd::{KeyKind, KeyPair, Sshd, SshdConfig};

const SIZE: u64 = 512 << 20;
const RUNS: usize = 3;
const COMMANDS: usize = 100;
const CIPHER: &str = "aes128-gcm@openssh.com";

/// CPU seconds: this process's own, and its waited-for children's.
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let tick = clock_ticks();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0) / tick;
    // utime, stime, cutime, cstime are fields 14..=17 of the whole line: 11..=14 after the name.
    (at(11) + at(12), at(13) + at(14))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A copy the bench timed holds what its source holds, byte for byte (checked outside the timing).
fn same_bytes(a: &Path, b: &Path) {
    assert!(
        gpulab_testkit::same_contents(a, b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// One measurement: wall time and client CPU time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: f64,
}

fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by_key(|s| s.wall);
    samples[samples.len() / 2]
}

/// Options for both `ssh` and `scp` (the port as `-oPort`, which both take; they differ on `-p`/`-P`).
fn openssh_args(sshd: &Sshd, key: &KeyPair) -> Vec<String> {
    let mut args: Vec<String> = [
        "-q",
        "-c",
        CIPHER,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-i".into());
    args.push(key.private.display().to_string());
    args.push(format!("-oPort={}", sshd.port()));
    args
}

fn run_openssh(program: &str, args: &[String], rest: &[String]) -> Sample {
    let before = cpu().1;
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .args(rest)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let wall = start.elapsed();
    assert!(status.success(), "{program} {rest:?} failed");
    Sample {
        wall,
        cpu: cpu().1 - before,
    }
}

async fn gpulab_copy(ssh: &SshSession, direction: CopyDirection) -> Sample {
    let before = cpu().0;
    let start = Instant::now();
    let stats = ssh.copy(direction, &Silent).await.unwrap();
    let wall = start.elapsed();
    assert_eq!(stats.bytes, SIZE);
    Sample {
        wall,
        cpu: cpu().0 - before,
    }
}

fn mib_s(sample: Sample) -> f64 {
    (SIZE as f64 / (1 << 20) as f64) / sample.wall.as_secs_f64()
}

fn cpu_per_gib(sample: Sample) -> f64 {
    sample.cpu / (SIZE as f64 / (1u64 << 30) as f64)
}

fn row(what: &str, sample: Sample) {
    println!(
        "{what:<40} {:>8.0} MiB/s {:>8.2} s  {:>6.2} CPU s/GiB",
        mib_s(sample),
        sample.wall.as_secs_f64(),
        cpu_per_gib(sample)
    );
}

/// The dedicated account for the lean command loop: its login shell starts without sourcing anything slow,
/// as root's does in the workspace image (Ubuntu's stock `.bashrc` returns at once for non-interactive shells).
const LEAN_USER: &str = "gpulab-bench";
/// Its `~/.bashrc`, which Debian's bash sources for commands from sshd.
const LEAN_BASHRC: &str = "# gpulab's ssh bench: a lean login environment, like the workspace image's.\n\
                           case $- in *i*) ;; *) return;; esac\n";

/// An account to log in as, and how sshd would start its shell.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    shell: PathBuf,
}

fn run_quiet(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `name`'s passwd entry.
fn account(name: &str) -> Result<Account, String> {
    let entry = run_quiet("getent", &["passwd", name])?;
    let fields: Vec<&str> = entry.split(':').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let number = |i: usize| {
        field(i)
            .parse()
            .map_err(|_| format!("bad passwd entry: {entry}"))
    };
    Ok(Account {
        name: name.to_string(),
        uid: number(2)?,
        gid: number(3)?,
        home: PathBuf::from(field(5)),
        shell: PathBuf::from(field(6)),
    })
}

/// Create (once) the lean account: a system user with bash and a `.bashrc` that returns at once, unlocked so
/// sshd (without PAM) lets it log in with a key. Needs root.
fn lean_account() -> Result<Account, String> {
    if run_quiet("id", &["-u", LEAN_USER]).is_err() {
        let made = run_quiet(
            "useradd",
            &[
                "--system",
                "--create-home",
                "--shell",
                "/bin/bash",
                LEAN_USER,
            ],
        );
        // Another run may have made it meanwhile.
        if run_quiet("id", &["-u", LEAN_USER]).is_err() {
            made?;
        }
    }
    // useradd leaves the password `!` (locked); `*` is no password either, but not locked.
    let status = run_quiet("passwd", &["-S", LEAN_USER])?;
    if status.split_whitespace().nth(1) == Some("L") {
        run_quiet("usermod", &["-p", "*", LEAN_USER])?;
    }
    let account = account(LEAN_USER)?;
    let bashrc = account.home.join(".bashrc");
    if std::fs::read_to_string(&bashrc).ok().as_deref() != Some(LEAN_BASHRC) {
        std::fs::write(&bashrc, LEAN_BASHRC)
            .map_err(|e| format!("write {}: {e}", bashrc.display()))?;
    }
    Ok(account)
}

/// One local `<login shell> -c true` as `account`, with the environment sshd gives a command (the
/// `SSH_CLIENT` that makes Debian's bash source `~/.bashrc`, no `SHLVL`): the floor under any command sshd
/// runs for that account. The median of 11.
fn local_shell_floor(account: &Account, port: u16) -> Duration {
    use std::os::unix::process::CommandExt;
    let path = if account.uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    };
    let mut times: Vec<Duration> = (0..11)
        .map(|_| {
            let start = Instant::now();
            let status = Command::new(&account.shell)
                .args(["-c", "true"])
                .env_clear()
                .env("USER", &account.name)
                .env("LOGNAME", &account.name)
                .env("HOME", &account.home)
                .env("SHELL", &account.shell)
                .env("PATH", path)
                .env("SSH_CLIENT", format!("127.0.0.1 50000 {port}"))
                .env(
                    "SSH_CONNECTION",
                    format!("127.0.0.1 50000 127.0.0.1 {port}"),
                )
                .current_dir(&account.home)
                .uid(account.uid)
                .gid(account.gid)
                .stdin(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("run {}: {e}", account.shell.display()));
            assert!(
                status.success(),
                "{} -c true failed",
                account.shell.display()
            );
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// The command loop, one way and the other, for one account.
struct CommandLoop {
    user: String,
    gpulab: Sample,
    connect: Duration,
    ssh: Sample,
    floor: Duration,
}

fn ssh_options(user: &str, key: &KeyPair, sshd: &Sshd) -> SshOptions {
    SshOptions::new(
        user,
        SshAuth::key(&key.private),
        HostKeyPolicy::Pinned(parse_public_key(&sshd.host_key(KeyKind::Ed25519).public).unwrap()),
    )
}

/// `COMMANDS` × `true` over one gpulab connection, then `COMMANDS` × `ssh user@host true`.
async fn command_loop(
    sshd: &Sshd,
    key: &KeyPair,
    openssh: &[String],
    account: &Account,
    session: Option<(&SshSession, Duration)>,
) -> CommandLoop {
    let connected;
    let (ssh, connect) = match session {
        Some(s) => s,
        None => {
            let start = Instant::now();
            connected = SshSession::connect_tcp(sshd.addr(), ssh_options(&account.name, key, sshd))
                .await
                .unwrap();
            (&connected, start.elapsed())
        }
    };
    let before = cpu().0;
    let start = Instant::now();
    for _ in 0..COMMANDS {
        let out = ssh
            .exec(ExecRequest {
                argv: vec!["true".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(out.status.success());
    }
    let gpulab = Sample {
        wall: start.elapsed(),
        cpu: cpu().0 - before,
    };
    if session.is_none() {
        let _ = ssh.close().await;
    }
    let before = cpu().1;
    let start = Instant::now();
    for _ in 0..COMMANDS {
        run_openssh(
            "ssh",
            openssh,
            &[format!("{}@127.0.0.1", account.name), "true".into()],
        );
    }
    let ssh = Sample {
        wall: start.elapsed(),
        cpu: cpu().1 - before,
    };
    CommandLoop {
        user: account.name.clone(),
        gpulab,
        connect,
        ssh,
        floor: local_shell_floor(account, sshd.port()),
    }
}

fn print_loop(l: &CommandLoop) {
    println!(
        "{:<40} {:>8.1} ms each, {:.2} s total, {:.2} CPU s (connect once: {:.0} ms)",
        format!("gpulab {COMMANDS} × exec true as {}", l.user),
        l.gpulab.wall.as_secs_f64() * 1000.0 / COMMANDS as f64,
        l.gpulab.wall.as_secs_f64(),
        l.gpulab.cpu,
        l.connect.as_secs_f64() * 1000.0
    );
    println!(
        "{:<40} {:>8.1} ms each, {:.2} s total, {:.2} CPU s",
        format!("{COMMANDS} × ssh {}@host true", l.user),
        l.ssh.wall.as_secs_f64() * 1000.0 / COMMANDS as f64,
        l.ssh.wall.as_secs_f64(),
        l.ssh.cpu
    );
    println!(
        "{:<40} {:>8.1} ms (floor: the login shell alone, median of 11)",
        format!("local bash -c true as {}", l.user),
        l.floor.as_secs_f64() * 1000.0
    );
}

fn loop_ratio(l: &CommandLoop) -> f64 {
    l.ssh.wall.as_secs_f64() / l.gpulab.wall.as_secs_f64()
}

/// For profiling one side alone (`GPULAB_SSH_BENCH=upload` or `download`): only gpulab's transfers that way.
async fn profile_only(ssh: &SshSession, sshd: &Sshd, source: &Path, work: &Path, what: &str) {
    let remote = sshd.dir().join("bench").join("profile.bin");
    if what == "download" {
        // Put the file there without gpulab, so that only downloads are profiled.
        std::fs::copy(source, &remote).unwrap();
    }
    let mut samples = vec![];
    for _ in 0..RUNS {
        let direction = match what {
            "upload" => CopyDirection::Upload {
                local: source.to_path_buf(),
                remote: remote.display().to_string(),
            },
            "download" => CopyDirection::Download {
                remote: remote.display().to_string(),
                local: work.join("profile-back.bin"),
            },
            other => panic!("GPULAB_SSH_BENCH={other}: expected upload or download"),
        };
        samples.push(gpulab_copy(ssh, direction).await);
    }
    row(&format!("gpulab {what} (SFTP)"), median(samples));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if gpulab_testkit::sshd::sshd_path().is_none() {
        eprintln!("ssh bench skipped: sshd is not installed (apt-get install openssh-server)");
        return;
    }
    let me = account(&gpulab_testkit::sshd::current_user()).unwrap();
    // The lean account's authorized_keys, where it can read it (sshd reads it as that user).
    let lean_keys = tempfile::Builder::new()
        .prefix("gpulab-ssh-bench-keys-")
        .tempdir()
        .unwrap();
    let lean = if me.uid == 0 {
        lean_account().map_err(|e| format!("could not set up the {LEAN_USER} account: {e}"))
    } else {
        Err(format!(
            "not root, so no {LEAN_USER} account to log in as: only the loop as {}",
            me.name
        ))
    };
    let lean_authorized = lean_keys.path().join("authorized_keys");
    let mut config = SshdConfig::default();
    if lean.is_ok() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lean_keys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        config = config.admit_user(LEAN_USER, &lean_authorized);
    }
    let sshd = Sshd::start_with(config);
    let key = sshd.user_key(KeyKind::Ed25519, None);
    // The same key for both accounts; 0644 whatever the umask, so the lean user can read it.
    std::fs::write(&lean_authorized, format!("{}\n", key.public)).unwrap();
    std::fs::set_permissions(
        &lean_authorized,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let connect_start = Instant::now();
    let ssh = SshSession::connect_tcp(sshd.addr(), ssh_options(sshd.user(), &key, &sshd))
        .await
        .unwrap();
    let connect = connect_start.elapsed();

    let work = tempfile::Builder::new()
        .prefix("gpulab-ssh-bench-")
        .tempdir()
        .unwrap();
    let source = work.path().join("source.bin");
    gpulab_testkit::write_noise(&source, SIZE, 1);
    let remote_dir = sshd.dir().join("bench");
    std::fs::create_dir_all(&remote_dir).unwrap();
    if let Ok(what) = std::env::var("GPULAB_SSH_BENCH") {
        profile_only(&ssh, &sshd, &source, work.path(), &what).await;
        let _ = ssh.close().await;
        return;
    }
    let remote_file = |name: &str| -> PathBuf { remote_dir.join(name) };
    let openssh = openssh_args(&sshd, &key);
    let target = |path: &Path| format!("{}@127.0.0.1:{}", sshd.user(), path.display());
    let (mut g_up, mut g_down, mut s_up, mut s_down) = (vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        // gpulab up, then down.
        let up_to = remote_file(&format!("g-{run}.bin"));
        g_up.push(
            gpulab_copy(
                &ssh,
                CopyDirection::Upload {
                    local: source.clone(),
                    remote: up_to.display().to_string(),
                },
            )
            .await,
        );
        same_bytes(&source, &up_to);
        let back = work.path().join(format!("g-back-{run}.bin"));
        g_down.push(
            gpulab_copy(
                &ssh,
                CopyDirection::Download {
                    remote: up_to.display().to_string(),
                    local: back.clone(),
                },
            )
            .await,
        );
        same_bytes(&source, &back);
        let _ = std::fs::remove_file(&up_to);
        let _ = std::fs::remove_file(&back);

        // scp up, then down.
        let up_to = remote_file(&format!("s-{run}.bin"));
        s_up.push(run_openssh(
            "scp",
            &openssh,
            &[source.display().to_string(), target(&up_to)],
        ));
        same_bytes(&source, &up_to);
        let back = work.path().join(format!("s-back-{run}.bin"));
        s_down.push(run_openssh(
            "scp",
            &openssh,
            &[target(&up_to), back.display().to_string()],
        ));
        same_bytes(&source, &back);
        let _ = std::fs::remove_file(&up_to);
        let _ = std::fs::remove_file(&back);
    }
    let (g_up, g_down, s_up, s_down) = (median(g_up), median(g_down), median(s_up), median(s_down));

    // Short commands over the one connection against one ssh process each: as this user, whose login shell
    // is whatever this machine's dotfiles make it, then as the lean account.
    let mine = command_loop(&sshd, &key, &openssh, &me, Some((&ssh, connect))).await;
    let lean = match lean {
        Ok(account) => Ok(command_loop(&sshd, &key, &openssh, &account, None).await),
        Err(why) => Err(why),
    };

    println!("ssh bench: 512 MiB, cipher {CIPHER}, median of {RUNS}; {COMMANDS} commands");
    row("gpulab upload (SFTP)", g_up);
    row("scp upload", s_up);
    row("gpulab download (SFTP)", g_down);
    row("scp download", s_down);
    print_loop(&mine);
    match &lean {
        Ok(lean) => print_loop(lean),
        Err(why) => println!("lean command loop skipped: {why}"),
    }
    let lean_ratio = match &lean {
        Ok(lean) => format!(", as {LEAN_USER} {:.1}×", loop_ratio(lean)),
        Err(_) => String::new(),
    };
    println!(
        "ratios: upload {:.2}× scp, download {:.2}× scp; commands faster than spawning ssh: as {} {:.1}×{lean_ratio}",
        mib_s(g_up) / mib_s(s_up),
        mib_s(g_down) / mib_s(s_down),
        mine.user,
        loop_ratio(&mine),
    );
    let _ = ssh.close().await;
}
