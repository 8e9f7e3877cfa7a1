//! The user-facing access built on the SSH transport, against a real OpenSSH sshd (gpulab_testkit::sshd)
//! and the Kubernetes emulator's port-forward to it: interactive PTY sessions, local port forwarding over
//! both transports, SSH itself through the API server's port-forward, and the generated ssh config used by
//! the real `ssh` and `scp` with a ProxyCommand that goes through `proxy_stdio`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gpulab_core::events::{Recorder, Silent};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_core::remote::forward::forward_local;
use gpulab_core::remote::ssh::{
    HostKeyPolicy, PtyRequest, ShellIo, SshAuth, SshOptions, SshSession, parse_public_key,
};
use gpulab_core::remote::ssh_config::{SshConfigEntry, install, proxy_stdio};
use gpulab_core::remote::{CopyDirection, ExecRequest, ExitStatus, RemoteExec};
use gpulab_testkit::kube::KubeEmulator;
use gpulab_testkit::ready_lab::ReadyLab;
use gpulab_testkit::sshd::{KeyKind, KeyPair, Sshd, generate_key};
use gpulab_testkit::{LabDir, echo_server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

/// A guard against hangs only; no test asserts how long anything takes.
const PATIENCE: Duration = Duration::from_secs(30);

fn options(sshd: &Sshd, key: &KeyPair) -> SshOptions {
    SshOptions::new(
        sshd.user(),
        SshAuth::key(&key.private),
        HostKeyPolicy::Pinned(parse_public_key(&sshd.host_key(KeyKind::Ed25519).public).unwrap()),
    )
}

async fn connect(sshd: &Sshd) -> SshSession {
    let key = sshd.user_key(KeyKind::Ed25519, None);
    SshSession::connect_tcp(sshd.addr(), options(sshd, &key))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

/// A ready lab in the emulator whose pod's port 22 goes to `sshd`.
struct Lab {
    emu: KubeEmulator,
    _dir: LabDir,
    exec: ApiServerExec,
    namespace: String,
    pod: String,
}

async fn lab_with_sshd(sshd: &Sshd) -> Lab {
    let ready = ReadyLab::start().await;
    let names = ready.names();
    ready
        .emu
        .register_port(&names.namespace, &names.pod, 22, sshd.addr());
    Lab {
        exec: ready.exec(),
        emu: ready.emu,
        _dir: ready.dir,
        namespace: names.namespace,
        pod: names.pod,
    }
}

/// Read from `from` into `seen` until it contains `needle`.
async fn read_until(from: &mut (impl AsyncRead + Unpin), seen: &mut String, needle: &str) {
    let wait = async {
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = from.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the session ended before {needle:?}; it said:\n{seen}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the session's output:\n{seen}"));
}

struct Driven {
    stdin: DuplexStream,
    stdout: DuplexStream,
    stderr: DuplexStream,
    resize: tokio::sync::mpsc::Sender<(u16, u16)>,
    session: tokio::task::JoinHandle<gpulab_core::Result<ExitStatus>>,
}

fn drive(ssh: &SshSession, command: Option<&str>, pty: Option<PtyRequest>) -> Driven {
    let (stdin, remote_in) = tokio::io::duplex(1 << 16);
    let (remote_out, stdout) = tokio::io::duplex(1 << 20);
    let (remote_err, stderr) = tokio::io::duplex(1 << 20);
    let (resize, resizes) = tokio::sync::mpsc::channel(4);
    let io = ShellIo {
        stdin: Box::pin(remote_in),
        stdout: Box::pin(remote_out),
        stderr: Box::pin(remote_err),
        resize: Some(resizes),
    };
    let ssh = ssh.clone();
    let command = command.map(str::to_owned);
    let session = tokio::spawn(async move { ssh.shell(command, pty, io).await });
    Driven {
        stdin,
        stdout,
        stderr,
        resize,
        session,
    }
}

async fn finish(driven: Driven) -> ExitStatus {
    tokio::time::timeout(PATIENCE, driven.session)
        .await
        .expect("the session did not end")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_shell_has_the_terminal_size_follows_resizes_and_returns_the_exit_code() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let mut s = drive(&ssh, None, Some(PtyRequest::new("xterm", 80, 24)));
    let mut seen = String::new();

    s.stdin.write_all(b"stty size; tty\n").await.unwrap();
    read_until(&mut s.stdout, &mut seen, "24 80").await;
    read_until(&mut s.stdout, &mut seen, "/dev/pts/").await;

    // The first `stty` has answered, so the resize lands between the two commands.
    s.resize.send((100, 40)).await.unwrap();
    s.stdin
        .write_all(b"stty size; echo \"term=$TERM\"; exit 3\n")
        .await
        .unwrap();
    read_until(&mut s.stdout, &mut seen, "40 100").await;
    read_until(&mut s.stdout, &mut seen, "term=xterm").await;
    assert_eq!(finish(s).await, ExitStatus::Code(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_with_or_without_a_pty_and_signals_come_back() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;

    // Without a PTY: no terminal, standard error apart, standard input's end is EOF.
    let mut s = drive(&ssh, Some("tty; echo oops >&2; cat; exit 7"), None);
    s.stdin.write_all(b"typed\n").await.unwrap();
    s.stdin.shutdown().await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    read_until(&mut s.stdout, &mut out, "typed").await;
    read_until(&mut s.stderr, &mut err, "oops").await;
    assert!(out.contains("not a tty"), "{out}");
    assert_eq!(finish(s).await, ExitStatus::Code(7));

    // With one: a terminal, and a kill shows as the signal.
    let mut s = drive(
        &ssh,
        Some("tty; kill -TERM $$"),
        Some(PtyRequest::new("vt100", 132, 50)),
    );
    let mut out = String::new();
    read_until(&mut s.stdout, &mut out, "/dev/pts/").await;
    let status = finish(s).await;
    assert_eq!(status, ExitStatus::Signal("TERM"));
    assert_eq!(status.shell_code(), 143);
}

/// Several clients at once through the forward, each echoed back its own bytes.
async fn check_forward(local: SocketAddr) {
    let clients = (0..5u8).map(|i| async move {
        let mut socket = TcpStream::connect(local).await.unwrap();
        let message = vec![b'a' + i; 100_000];
        let (mut r, mut w) = socket.split();
        let send = async {
            w.write_all(&message).await.unwrap();
        };
        let mut back = vec![0u8; message.len()];
        let receive = r.read_exact(&mut back);
        let (_, got) = tokio::join!(send, receive);
        got.unwrap();
        assert_eq!(back, message, "client {i}");
    });
    tokio::time::timeout(PATIENCE, futures::future::join_all(clients))
        .await
        .expect("the forward hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_forward_over_ssh_bridges_each_connection_and_stops_on_close() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let echo = echo_server().await;
    let exec: Arc<dyn RemoteExec> = Arc::new(ssh);
    let forward = forward_local(
        exec.clone(),
        "127.0.0.1:0".parse().unwrap(),
        echo.port(),
        Arc::new(Silent),
    )
    .await
    .unwrap();
    let local = forward.local_addr();
    assert_ne!(local.port(), 0);
    check_forward(local).await;
    assert_eq!(forward.connections(), 5);
    forward.close().await;
    assert!(
        TcpStream::connect(local).await.is_err(),
        "still listening after close"
    );

    let err = forward_local(exec, "0.0.0.0:0".parse().unwrap(), 1, Arc::new(Silent))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_forward_through_the_api_server_reaches_the_pod_port() {
    let sshd = Sshd::start();
    let lab = lab_with_sshd(&sshd).await;
    let echo = echo_server().await;
    lab.emu.register_port(&lab.namespace, &lab.pod, 8888, echo);
    let exec = lab.exec;
    let recorder = Arc::new(Recorder::default());
    let forward = forward_local(
        Arc::new(exec),
        "127.0.0.1:0".parse().unwrap(),
        8888,
        recorder,
    )
    .await
    .unwrap();
    check_forward(forward.local_addr()).await;
    let local = forward.local_addr();
    drop(forward);
    tokio::task::yield_now().await;
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(local).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still listening after the handle was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_through_the_api_server_port_forward() {
    let sshd = Sshd::start();
    let lab = lab_with_sshd(&sshd).await;
    let exec = &lab.exec;

    // Every key type, each with the host key of its kind, through the tunnel.
    for kind in KeyKind::ALL {
        let key = sshd.user_key(kind, None);
        let mut opts = options(&sshd, &key);
        opts.host_key =
            HostKeyPolicy::Pinned(parse_public_key(&sshd.host_key(kind).public).unwrap());
        let ssh = SshSession::connect_stream(exec.tunnel(22).await.unwrap(), "lab", opts)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} through the port-forward: {e}\n{}", sshd.log()));
        assert!(
            ssh.exec(ExecRequest::shell("true"))
                .await
                .unwrap()
                .status
                .success()
        );
        ssh.close().await.unwrap();
    }

    let key = sshd.user_key(KeyKind::Ed25519, None);

    let tunnel = exec.tunnel(22).await.unwrap();
    let ssh = SshSession::connect_stream(tunnel, "lab (port-forward)", options(&sshd, &key))
        .await
        .unwrap_or_else(|e| panic!("connect through the port-forward: {e}\n{}", sshd.log()));

    let out = ssh
        .exec(ExecRequest::shell("id -un; exit 5"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sshd.user());
    assert_eq!(out.status, ExitStatus::Code(5));

    // Many channels share the one tunnel.
    let runs = (0..20).map(|i| {
        let ssh = ssh.clone();
        async move { ssh.exec(ExecRequest::shell(format!("echo {i}"))).await }
    });
    for (i, out) in futures::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            String::from_utf8_lossy(&out.unwrap().stdout).trim(),
            i.to_string()
        );
    }

    // A copy both ways, byte-identical.
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("data.bin");
    gpulab_testkit::write_noise(&source, 8 << 20, 2);
    let remote = sshd.dir().join("uploaded.bin");
    let up = ssh
        .copy(
            CopyDirection::Upload {
                local: source.clone(),
                remote: remote.to_string_lossy().into(),
            },
            &Silent,
        )
        .await
        .unwrap();
    assert_eq!((up.files, up.bytes), (1, 8 << 20));
    let back = work.path().join("back.bin");
    ssh.copy(
        CopyDirection::Download {
            remote: remote.to_string_lossy().into(),
            local: back.clone(),
        },
        &Silent,
    )
    .await
    .unwrap();
    let original = std::fs::read(&source).unwrap();
    assert!(
        std::fs::read(&remote).unwrap() == original,
        "the upload differs"
    );
    assert!(
        std::fs::read(&back).unwrap() == original,
        "the download differs"
    );
    ssh.close().await.unwrap();

    // A key the server does not know is refused through the tunnel too.
    let stranger = generate_key(work.path(), KeyKind::Ed25519, None);
    let tunnel = exec.tunnel(22).await.unwrap();
    let refused = SshSession::connect_stream(tunnel, "lab", options(&sshd, &stranger)).await;
    assert!(refused.is_err());
}

/// A ProxyCommand for OpenSSH that hands its stdio to this test process over loopback TCP, where
/// [`proxy_stdio`] bridges it into the emulator's port-forward to the pod's sshd: the path `gpulab proxy`
/// takes, with the process boundary drawn at a socket instead of at the gpulab binary.
async fn proxy_listener(exec: Arc<ApiServerExec>) -> Vec<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let exec = exec.clone();
            tokio::spawn(async move {
                let tunnel = exec.tunnel(22).await.unwrap();
                let (r, w) = socket.into_split();
                let _ = proxy_stdio(tunnel, r, w).await;
            });
        }
    });
    vec![
        "bash".into(),
        "-c".into(),
        // ssh sends its ProxyCommand SIGHUP when it ends; the trap takes the reading `cat` down too, so
        // the socket closes and sshd sees the client go.
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; cat <&3 2>/dev/null & \
             trap 'kill $! 2>/dev/null' EXIT HUP TERM; cat >&3"
        ),
    ]
}

fn openssh(program: &str, config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_and_scp_use_the_generated_config_through_the_port_forward() {
    let sshd = Sshd::start();
    let lab = lab_with_sshd(&sshd).await;
    let proxy = proxy_listener(Arc::new(lab.exec.clone())).await;
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let work = tempfile::tempdir().unwrap();
    let ssh_dir = work.path().join("dot-ssh");

    let mut entry = SshConfigEntry::new(
        "lab1",
        Path::new("gpulab"),
        work.path().join("state/known_hosts"),
    );
    entry.proxy_command = proxy.clone();
    entry.user = sshd.user().into();
    entry.identity_file = Some(key.private.clone());
    entry.host_key = Some(sshd.host_key(KeyKind::Ed25519).public.clone());
    let installed = install(&entry, &ssh_dir).unwrap();
    let config = installed.main_config.clone();

    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || openssh("ssh", &config, &["gpulab-lab1", "echo", "ok"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");

    // scp through the same Host block, both ways.
    let local = work.path().join("file.bin");
    gpulab_testkit::write_noise(&local, 1 << 20, 3);
    let remote = sshd.dir().join("scp.bin");
    let target = format!("gpulab-lab1:{}", remote.display());
    let back = work.path().join("back.bin");
    let (up, down) = tokio::task::spawn_blocking({
        let (config, local, target, back) =
            (config.clone(), local.clone(), target.clone(), back.clone());
        move || {
            let up = openssh("scp", &config, &[local.to_str().unwrap(), &target]);
            let down = openssh("scp", &config, &[&target, back.to_str().unwrap()]);
            (up, down)
        }
    })
    .await
    .unwrap();
    assert!(
        up.status.success(),
        "scp up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        down.status.success(),
        "scp down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let original = std::fs::read(&local).unwrap();
    assert!(std::fs::read(&remote).unwrap() == original);
    assert!(std::fs::read(&back).unwrap() == original);

    // A different pinned key: OpenSSH refuses the host.
    let impostor = generate_key(work.path(), KeyKind::Ed25519, None);
    entry.host_key = Some(impostor.public);
    install(&entry, &ssh_dir).unwrap();
    let out =
        tokio::task::spawn_blocking(move || openssh("ssh", &config, &["gpulab-lab1", "true"]))
            .await
            .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Host key verification failed")
            || stderr.contains("IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
}
