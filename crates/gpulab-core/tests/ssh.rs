//! gpulab's SSH transport against a real OpenSSH sshd on loopback (see gpulab_testkit::sshd): every key
//! type, refused keys and host keys, trust on first use, exit codes and signals, stdin, 100 execs over one
//! connection, tunnels, and SFTP copies that are byte-identical, keep modes and times, and never leave a
//! partial file at the target name.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gpulab_core::Error;
use gpulab_core::events::{Event, Recorder, Silent};
use gpulab_core::remote::ssh::{
    HostKeyPolicy, PublicKey, SshAuth, SshOptions, SshSession, fingerprint, parse_public_key,
};
use gpulab_core::remote::{CopyDirection, ExecRequest, ExecStreams, ExitStatus, RemoteExec};
use gpulab_testkit::set_mtime;
use gpulab_testkit::sshd::{KeyKind, KeyPair, Sshd, SshdConfig, generate_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn host_key(sshd: &Sshd, kind: KeyKind) -> PublicKey {
    parse_public_key(&sshd.host_key(kind).public).unwrap()
}

fn options(sshd: &Sshd, key: &KeyPair) -> SshOptions {
    SshOptions::new(
        sshd.user(),
        SshAuth::key(&key.private),
        HostKeyPolicy::Pinned(host_key(sshd, KeyKind::Ed25519)),
    )
}

async fn connect(sshd: &Sshd) -> SshSession {
    let key = sshd.user_key(KeyKind::Ed25519, None);
    SshSession::connect_tcp(sshd.addr(), options(sshd, &key))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

fn argv(words: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: words.iter().map(|w| w.to_string()).collect(),
        ..Default::default()
    }
}

fn remote_message(e: &Error) -> String {
    match e {
        Error::Remote { message, hint } => format!("{message} / {}", hint.as_deref().unwrap_or("")),
        other => panic!("expected Error::Remote, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_type_authenticates() {
    let sshd = Sshd::start();
    for kind in KeyKind::ALL {
        let key = sshd.user_key(kind, None);
        // Pin the host key of the same kind, so each host key algorithm is negotiated too.
        let mut opts = options(&sshd, &key);
        opts.host_key = HostKeyPolicy::Pinned(host_key(&sshd, kind));
        let ssh = SshSession::connect_tcp(sshd.addr(), opts)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{}", sshd.log()));
        let out = ssh.exec(argv(&["id", "-un"])).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            sshd.user(),
            "{kind:?}"
        );
        assert!(out.status.success());
        ssh.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_asks_for_its_passphrase() {
    let sshd = Sshd::start();
    let key = sshd.user_key(KeyKind::Ed25519, Some("correct horse"));
    let with = |auth: SshAuth| {
        let mut opts = options(&sshd, &key);
        opts.auth = auth;
        opts
    };

    let asked = Arc::new(Mutex::new(0));
    let counter = asked.clone();
    let auth = SshAuth::key(&key.private).with_passphrase(move |_| {
        *counter.lock().unwrap() += 1;
        Some("correct horse".into())
    });
    let ssh = SshSession::connect_tcp(sshd.addr(), with(auth))
        .await
        .unwrap();
    assert!(ssh.exec(argv(&["true"])).await.unwrap().status.success());
    assert_eq!(*asked.lock().unwrap(), 1);

    let err = SshSession::connect_tcp(sshd.addr(), with(SshAuth::key(&key.private)))
        .await
        .unwrap_err();
    let msg = remote_message(&err);
    assert!(
        msg.contains("is encrypted") && msg.contains("ssh-add"),
        "{msg}"
    );

    let wrong = SshAuth::key(&key.private).with_passphrase(|_| Some("wrong".into()));
    let err = SshSession::connect_tcp(sshd.addr(), with(wrong))
        .await
        .unwrap_err();
    assert!(remote_message(&err).contains("wrong or no passphrase"));
}

/// An ssh-agent of our own, killed on drop.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent (openssh-client)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    /// `ssh-add` the key, answering its passphrase prompt through SSH_ASKPASS.
    fn add(&self, key: &KeyPair) {
        let askpass = self._dir.path().join("askpass.sh");
        std::fs::write(
            &askpass,
            format!(
                "#!/bin/sh\necho '{}'\n",
                key.passphrase.clone().unwrap_or_default()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        let out = std::process::Command::new("ssh-add")
            .arg(&key.private)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_agent_signs_for_plain_and_encrypted_keys() {
    let sshd = Sshd::start();
    let agent = Agent::start();
    let rsa = sshd.user_key(KeyKind::Rsa, None);
    let encrypted = sshd.user_key(KeyKind::Ecdsa, Some("agent only"));
    agent.add(&rsa);
    agent.add(&encrypted);

    // Only the agent: every identity it holds is tried.
    let mut opts = options(&sshd, &rsa);
    opts.auth = SshAuth::agent(&agent.socket);
    let ssh = SshSession::connect_tcp(sshd.addr(), opts).await.unwrap();
    assert!(ssh.exec(argv(&["true"])).await.unwrap().status.success());

    // An encrypted key file the agent holds needs no passphrase.
    let mut opts = options(&sshd, &encrypted);
    opts.auth = SshAuth::key(&encrypted.private).with_agent(&agent.socket);
    let ssh = SshSession::connect_tcp(sshd.addr(), opts).await.unwrap();
    assert!(ssh.exec(argv(&["true"])).await.unwrap().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused() {
    let sshd = Sshd::start();
    let stranger = tempfile::tempdir().unwrap();
    let key = generate_key(stranger.path(), KeyKind::Ed25519, None);
    let err = SshSession::connect_tcp(sshd.addr(), options(&sshd, &key))
        .await
        .unwrap_err();
    let msg = remote_message(&err);
    let fp = fingerprint(&parse_public_key(&key.public).unwrap());
    assert!(
        msg.contains("refused the key") && msg.contains(&fp),
        "{msg}"
    );
    assert!(
        msg.contains("authorized_keys"),
        "the hint says where keys go: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_mismatch_is_refused_naming_both_fingerprints() {
    let sshd = Sshd::start();
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let other = tempfile::tempdir().unwrap();
    let impostor =
        parse_public_key(&generate_key(other.path(), KeyKind::Ed25519, None).public).unwrap();
    let mut opts = options(&sshd, &key);
    opts.host_key = HostKeyPolicy::Pinned(impostor.clone());
    let err = SshSession::connect_tcp(sshd.addr(), opts)
        .await
        .unwrap_err();
    let msg = remote_message(&err);
    assert!(msg.contains("host key") && msg.contains("changed"), "{msg}");
    assert!(msg.contains(&fingerprint(&impostor)), "{msg}");
    assert!(
        msg.contains(&fingerprint(&host_key(&sshd, KeyKind::Ed25519))),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_records_the_key_then_holds_to_it() {
    let sshd = Sshd::start();
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let recorded: Arc<Mutex<Vec<PublicKey>>> = Arc::default();
    let sink = recorded.clone();
    let mut opts = options(&sshd, &key);
    opts.host_key = HostKeyPolicy::TrustOnFirstUse {
        known: None,
        record: Arc::new(move |key: &PublicKey| {
            sink.lock().unwrap().push(key.clone());
            Ok(())
        }),
    };
    let ssh = SshSession::connect_tcp(sshd.addr(), opts.clone())
        .await
        .unwrap();
    assert!(ssh.exec(argv(&["true"])).await.unwrap().status.success());
    let seen = recorded.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let real: Vec<PublicKey> = KeyKind::ALL.iter().map(|k| host_key(&sshd, *k)).collect();
    assert!(real.iter().any(|k| k.key_data() == seen[0].key_data()));

    // Known now: the same key connects without recording again; another is refused.
    let never = Arc::new(|_: &PublicKey| -> gpulab_core::Result<()> { panic!("must not record") });
    opts.host_key = HostKeyPolicy::TrustOnFirstUse {
        known: Some(seen[0].clone()),
        record: never.clone(),
    };
    SshSession::connect_tcp(sshd.addr(), opts.clone())
        .await
        .unwrap();
    let other = tempfile::tempdir().unwrap();
    let impostor =
        parse_public_key(&generate_key(other.path(), KeyKind::Ecdsa, None).public).unwrap();
    opts.host_key = HostKeyPolicy::TrustOnFirstUse {
        known: Some(impostor),
        record: never,
    };
    let err = SshSession::connect_tcp(sshd.addr(), opts)
        .await
        .unwrap_err();
    assert!(remote_message(&err).contains("changed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_signals_stdin_env_and_timeouts() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;

    let out = ssh
        .exec(ExecRequest::shell("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Code(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let out = ssh
        .exec(argv(&["sh", "-c", "kill -KILL $$"]))
        .await
        .unwrap();
    assert_eq!(out.status, ExitStatus::Signal("KILL"));
    assert_eq!(out.status.shell_code(), 137);

    // Arguments arrive as given, without the shell splitting or expanding them.
    let out = ssh
        .exec(argv(&["printf", "%s|", "a b", "$HOME", "it's"]))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$HOME|it's|");

    let request = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "printf %s \"$GREETING\"".into()],
        env: vec![("GREETING".into(), "hello 'there'".into())],
        ..Default::default()
    };
    assert_eq!(ssh.exec(request).await.unwrap().stdout, b"hello 'there'");

    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let request = ExecRequest {
        argv: vec!["cat".into()],
        stdin: Some(input.clone()),
        ..Default::default()
    };
    let out = ssh.exec(request).await.unwrap();
    assert!(
        out.stdout == input,
        "stdin came back changed ({} bytes)",
        out.stdout.len()
    );

    // Streaming: stdin from a reader, output into writers.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let streams = ExecStreams {
        stdin: Some(Box::pin(&b"line one\nline two\n"[..])),
        stdout: Box::pin(&mut stdout),
        stderr: Box::pin(&mut stderr),
    };
    let status = ssh
        .exec_streaming(argv(&["wc", "-l"]), streams)
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), "2");

    let request = ExecRequest {
        timeout: Some(Duration::from_millis(300)),
        ..argv(&["sleep", "30"])
    };
    match ssh.exec(request).await {
        Err(Error::Timeout { waited, .. }) => assert_eq!(waited, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The connection is still good afterwards.
    assert!(ssh.exec(argv(&["true"])).await.unwrap().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_execs_share_one_connection() {
    // sshd's default MaxSessions (10), with the client's default cap of 8 channels: the rest queue.
    let sshd = Sshd::start_with(SshdConfig {
        max_sessions: 10,
        ..Default::default()
    });
    let ssh = connect(&sshd).await;
    let runs = (0..100).map(|i| {
        let ssh = ssh.clone();
        tokio::spawn(async move {
            let out = ssh.exec(argv(&["echo", &i.to_string()])).await.unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
        })
    });
    for run in futures::future::join_all(runs).await {
        run.unwrap();
    }

    // With a server that allows it, 100 channels open at once.
    let sshd = Sshd::start();
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let mut opts = options(&sshd, &key);
    opts.max_sessions = 100;
    let ssh = SshSession::connect_tcp(sshd.addr(), opts).await.unwrap();
    let runs = (0..100).map(|i| {
        let ssh = ssh.clone();
        async move {
            let out = ssh
                .exec(argv(&["sh", "-c", "sleep 0.2; echo $0", &i.to_string()]))
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_reaches_a_port_in_the_workspace() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf.to_ascii_uppercase()).await.unwrap();
    });
    let mut tunnel = ssh.tunnel(port).await.unwrap();
    tunnel.write_all(b"hello").await.unwrap();
    let mut reply = [0u8; 5];
    tunnel.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HELLO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_goes_both_ways_byte_identical() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let work = tempfile::tempdir().unwrap();
    let (source, remote, back) = (
        work.path().join("source.bin"),
        sshd.dir().join("remote.bin"),
        work.path().join("back.bin"),
    );
    // Many SFTP windows and requests in flight; speed is the ssh bench's (benches/ssh.rs: 512 MiB, which
    // checks its copies byte for byte as well).
    const SIZE: u64 = 96 << 20;
    gpulab_testkit::write_noise(&source, SIZE, 1);

    let recorder = Recorder::default();
    let up = ssh
        .copy(
            CopyDirection::Upload {
                local: source.clone(),
                remote: remote.to_string_lossy().into(),
            },
            &recorder,
        )
        .await
        .unwrap();
    assert_eq!((up.files, up.bytes), (1, SIZE));
    let last = recorder.events().into_iter().rev().find_map(|e| match e {
        Event::Progress { done, total, .. } => Some((done, total)),
        _ => None,
    });
    assert_eq!(last, Some((SIZE, Some(SIZE))));

    let down = ssh
        .copy(
            CopyDirection::Download {
                remote: remote.to_string_lossy().into(),
                local: back.clone(),
            },
            &Silent,
        )
        .await
        .unwrap();
    assert_eq!((down.files, down.bytes), (1, SIZE));
    assert!(
        gpulab_testkit::same_contents(&source, &remote),
        "the upload differs"
    );
    assert!(
        gpulab_testkit::same_contents(&source, &back),
        "the download differs"
    );
}

/// Entries of `dir` whose names contain `needle`.
fn entries_with(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_leaves_no_file_at_the_target() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big.bin");
    gpulab_testkit::write_noise(&source, 256 << 20, 7);
    let remote_dir = sshd.dir().join("incoming");
    std::fs::create_dir(&remote_dir).unwrap();
    let target = remote_dir.join("big.bin");

    // 1. The upload's future is dropped midway (Ctrl-C, a timeout around it).
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let progress = move |e: Event| {
        if let Event::Progress { done, .. } = e {
            let _ = tx.send(done);
        }
    };
    let upload = ssh.copy(
        CopyDirection::Upload {
            local: source.clone(),
            remote: target.to_string_lossy().into(),
        },
        &progress,
    );
    let mut watch = rx.clone();
    tokio::select! {
        r = upload => panic!("the upload finished before it was interrupted: {r:?}"),
        _ = watch.wait_for(|done| *done > 32 << 20) => {}
    }
    assert!(!target.exists(), "a partial upload sits at the target name");
    // The temporary file is removed in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entries_with(&remote_dir, ".part").is_empty() {
        assert!(Instant::now() < deadline, "the temporary file stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 2. The same for a download: the local temporary file goes at once.
    std::fs::copy(&source, &target).unwrap();
    let local_dir = work.path().join("down");
    std::fs::create_dir(&local_dir).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let progress = move |e: Event| {
        if let Event::Progress { done, .. } = e {
            let _ = tx.send(done);
        }
    };
    let download = ssh.copy(
        CopyDirection::Download {
            remote: target.to_string_lossy().into(),
            local: local_dir.join("big.bin"),
        },
        &progress,
    );
    let mut watch = rx.clone();
    tokio::select! {
        r = download => panic!("the download finished before it was interrupted: {r:?}"),
        _ = watch.wait_for(|done| *done > 32 << 20) => {}
    }
    assert!(
        entries_with(&local_dir, "big").is_empty(),
        "{:?}",
        entries_with(&local_dir, "")
    );
    std::fs::remove_file(&target).unwrap();

    // 3. The connection dies midway: over a proxy that the test cuts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let sshd_addr = sshd.addr();
    let proxy = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(sshd_addr).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let stream = tokio::net::TcpStream::connect(proxy_addr).await.unwrap();
    let cut = SshSession::connect_stream(stream, "proxied sshd", options(&sshd, &key))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let progress = move |e: Event| {
        if let Event::Progress { done, .. } = e {
            let _ = tx.send(done);
        }
    };
    let upload = cut.copy(
        CopyDirection::Upload {
            local: source.clone(),
            remote: target.to_string_lossy().into(),
        },
        &progress,
    );
    let mut watch = rx.clone();
    let killer = async {
        watch.wait_for(|done| *done > 32 << 20).await.unwrap();
        proxy.abort();
        std::future::pending::<()>().await
    };
    let result = tokio::select! {
        r = upload => r,
        () = killer => unreachable!(),
    };
    assert!(result.is_err(), "the upload survived a dead connection");
    assert!(!target.exists(), "a partial upload sits at the target name");
}

fn mode_and_mtime(path: &Path) -> (u32, u64) {
    let meta = std::fs::metadata(path).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (meta.permissions().mode() & 0o7777, mtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_copy_recursively_keeping_modes_and_mtimes() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("project");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    let files = [
        ("README.md", 0o644, 1_000_000_000, 10),
        ("sub/run.sh", 0o755, 1_100_000_000, 1000),
        ("sub/deeper/secret", 0o600, 1_200_000_000, 300_000),
        ("empty.txt", 0o640, 1_300_000_000, 0),
    ];
    for (name, mode, mtime, len) in files {
        let path = tree.join(name);
        gpulab_testkit::write_noise(&path, len, mtime);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, mtime);
    }
    let dirs = [
        ("sub/deeper", 0o700, 1_400_000_000),
        ("sub", 0o750, 1_500_000_000),
        ("empty", 0o755, 1_600_000_000),
        ("", 0o755, 1_700_000_000),
    ];
    for (name, mode, mtime) in dirs {
        let path = tree.join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, mtime);
    }

    // Upload into an existing directory: the tree lands inside it, as with cp -r.
    let remote_parent = sshd.dir().join("uploads");
    std::fs::create_dir(&remote_parent).unwrap();
    let recorder = Recorder::default();
    let stats = ssh
        .copy(
            CopyDirection::Upload {
                local: tree.clone(),
                remote: remote_parent.to_string_lossy().into(),
            },
            &recorder,
        )
        .await
        .unwrap();
    assert_eq!(stats.files, 4);
    assert_eq!(stats.bytes, 301_010);
    let uploaded = remote_parent.join("project");

    // Download to a new name.
    let back = work.path().join("copy-back");
    ssh.copy(
        CopyDirection::Download {
            remote: uploaded.to_string_lossy().into(),
            local: back.clone(),
        },
        &Silent,
    )
    .await
    .unwrap();

    for copy in [&uploaded, &back] {
        for (name, mode, mtime, _) in files {
            assert_eq!(
                mode_and_mtime(&copy.join(name)),
                (mode, mtime),
                "{}",
                copy.join(name).display()
            );
            assert!(gpulab_testkit::same_contents(
                &tree.join(name),
                &copy.join(name)
            ));
        }
        for (name, mode, mtime) in dirs {
            assert_eq!(
                mode_and_mtime(&copy.join(name)),
                (mode, mtime),
                "{}/{name}",
                copy.display()
            );
        }
        assert!(entries_with(copy, ".part").is_empty());
    }

    // Copying a file over an existing one replaces it whole.
    let target = uploaded.join("README.md");
    std::fs::write(&target, "old").unwrap();
    ssh.copy(
        CopyDirection::Upload {
            local: tree.join("README.md"),
            remote: target.to_string_lossy().into(),
        },
        &Silent,
    )
    .await
    .unwrap();
    assert!(gpulab_testkit::same_contents(
        &tree.join("README.md"),
        &target
    ));
}
