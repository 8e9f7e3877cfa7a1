//! Trees copied and synced through each path a copy can take, against a real OpenSSH sshd on loopback
//! (one tar stream over an exec channel, or file by file over SFTP) and the Kubernetes emulator's exec
//! (tar, as `--via kube`, and as `gpulab cp` sends one source): what arrives is identical to what left (content, modes, modification times,
//! empty directories, symbolic links followed or kept as asked), an interrupted copy leaves nothing at the
//! target, and a sync sends what changed, removes what it should, leaves ignored files alone, and sends
//! nothing when nothing changed.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use gpulab_core::events::{Event, Silent};
use gpulab_core::remote::ssh::{HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key};
use gpulab_core::remote::sync::{SyncDirection, SyncOptions, sync};
use gpulab_core::remote::{CopyDirection, CopyOptions, Links, RemoteExec};
use gpulab_testkit::set_mtime;
use gpulab_testkit::sshd::{KeyKind, Sshd};

async fn connect(sshd: &Sshd) -> SshSession {
    let key = sshd.user_key(KeyKind::Ed25519, None);
    let options = SshOptions::new(
        sshd.user(),
        SshAuth::key(&key.private),
        HostKeyPolicy::Pinned(parse_public_key(&sshd.host_key(KeyKind::Ed25519).public).unwrap()),
    );
    SshSession::connect_tcp(sshd.addr(), options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}

/// `root/tree`: files of several modes and old times, nested and empty directories, a link to a file and
/// a link to a directory.
fn make_tree(root: &Path) -> std::path::PathBuf {
    let tree = root.join("tree");
    for dir in ["a/b/c", "empty", "data"] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    let files = [
        ("top.py", 0o755, 3_000),
        ("a/x.txt", 0o640, 17),
        ("a/b/c/deep.bin", 0o600, 300_000),
        ("data/zero", 0o644, 0),
    ];
    for (i, (name, mode, len)) in files.into_iter().enumerate() {
        let path = tree.join(name);
        std::fs::write(&path, gpulab_testkit::noise(i as u64, len)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, 1_500_000_000 + i as u64 * 86_400);
    }
    for i in 0..40 {
        let path = tree.join(format!("data/f{i:02}"));
        std::fs::write(&path, gpulab_testkit::noise(100 + i, 1024)).unwrap();
        set_mtime(&path, 1_600_000_000 + i);
    }
    std::os::unix::fs::symlink("top.py", tree.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("a/b", tree.join("link-to-dir")).unwrap();
    std::fs::set_permissions(tree.join("empty"), std::fs::Permissions::from_mode(0o750)).unwrap();
    for (dir, secs) in [
        ("a/b/c", 1_400_000_000),
        ("a/b", 1_400_000_001),
        ("a", 1_400_000_002),
    ] {
        set_mtime(&tree.join(dir), secs);
    }
    for (dir, secs) in [
        ("empty", 1_400_000_003),
        ("data", 1_400_000_004),
        ("", 1_300_000_000),
    ] {
        set_mtime(&tree.join(dir), secs);
    }
    tree
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: i64,
        bytes: Vec<u8>,
    },
    Link(String),
}

/// Every entry under `root` (not following links), by relative path.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let entry = if meta.file_type().is_symlink() {
            Entry::Link(std::fs::read_link(&path).unwrap().display().to_string())
        } else if meta.is_dir() {
            for child in std::fs::read_dir(&path).unwrap() {
                let name = child.unwrap().file_name().into_string().unwrap();
                stack.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
            Entry::Dir {
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
            }
        } else {
            Entry::File {
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
                bytes: std::fs::read(&path).unwrap(),
            }
        };
        entries.insert(rel, entry);
    }
    entries
}

/// What `original` should look like after a copy that treats links as `links` says: followed, a link to
/// a file is that file and a link to a directory is left out.
fn expected(original: &Path, links: Links) -> BTreeMap<String, Entry> {
    let mut want = tree(original);
    if links == Links::Follow {
        want.remove("link-to-dir");
        let meta = std::fs::metadata(original.join("link-to-file")).unwrap();
        want.insert(
            "link-to-file".into(),
            Entry::File {
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
                bytes: std::fs::read(original.join("top.py")).unwrap(),
            },
        );
    }
    want
}

fn assert_same(want: &BTreeMap<String, Entry>, copy: &Path, what: &str) {
    let got = tree(copy);
    let names = |t: &BTreeMap<String, Entry>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(want), names(&got), "{what}: different names");
    for (rel, entry) in want {
        assert!(
            entry == &got[rel],
            "{what}: {rel:?} differs: {entry:?} vs {:?}",
            got[rel]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_copied_both_ways_over_ssh_arrives_identical() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let local = tempfile::tempdir().unwrap();
    let original = make_tree(local.path());
    for file_by_file in [false, true] {
        for links in [Links::Keep, Links::Follow] {
            let what = format!("file_by_file={file_by_file} links={links:?}");
            let options = CopyOptions {
                links,
                file_by_file,
            };
            let remote = sshd.dir().join(format!("up-{file_by_file}-{links:?}"));
            let stats = ssh
                .copy_with(
                    CopyDirection::Upload {
                        local: original.clone(),
                        remote: remote.display().to_string(),
                    },
                    &options,
                    &Silent,
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: upload: {e}"));
            let want = expected(&original, links);
            assert_same(&want, &remote, &format!("{what}, uploaded"));
            let files = want
                .values()
                .filter(|e| matches!(e, Entry::File { .. }))
                .count();
            assert_eq!(stats.files, files as u64, "{what}");

            let back = local.path().join(format!("back-{file_by_file}-{links:?}"));
            ssh.copy_with(
                CopyDirection::Download {
                    remote: remote.display().to_string(),
                    local: back.clone(),
                },
                &options,
                &Silent,
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: download: {e}"));
            assert_same(&want, &back, &format!("{what}, downloaded"));

            // Into a directory, twice: the second merges into the first in place, still identical.
            let into = sshd.dir().join(format!("into-{file_by_file}-{links:?}"));
            std::fs::create_dir(&into).unwrap();
            for _ in 0..2 {
                ssh.copy_with(
                    CopyDirection::Upload {
                        local: original.clone(),
                        remote: into.display().to_string(),
                    },
                    &options,
                    &Silent,
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: upload into a directory: {e}"));
                assert_same(
                    &want,
                    &into.join("tree"),
                    &format!("{what}, into a directory"),
                );
            }
            assert!(
                temporaries(&into).is_empty(),
                "{what}: {:?}",
                temporaries(&into)
            );
        }
    }
    assert!(
        temporaries(sshd.dir()).is_empty(),
        "{:?}",
        temporaries(sshd.dir())
    );
    assert!(
        temporaries(local.path()).is_empty(),
        "{:?}",
        temporaries(local.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_copied_both_ways_through_the_api_server_arrives_identical() {
    let lab = gpulab_testkit::ready_lab::ReadyLab::start().await;
    let exec = lab.exec();
    let local = tempfile::tempdir().unwrap();
    let original = make_tree(local.path());
    let remote_dir = tempfile::tempdir().unwrap();
    for links in [Links::Keep, Links::Follow] {
        let options = CopyOptions {
            links,
            ..Default::default()
        };
        let remote = remote_dir.path().join(format!("{links:?}"));
        exec.copy_with(
            CopyDirection::Upload {
                local: original.clone(),
                remote: remote.display().to_string(),
            },
            &options,
            &Silent,
        )
        .await
        .unwrap();
        let want = expected(&original, links);
        assert_same(&want, &remote, &format!("kube {links:?}, uploaded"));
        let back = local.path().join(format!("kube-back-{links:?}"));
        exec.copy_with(
            CopyDirection::Download {
                remote: remote.display().to_string(),
                local: back.clone(),
            },
            &options,
            &Silent,
        )
        .await
        .unwrap();
        assert_same(&want, &back, &format!("kube {links:?}, downloaded"));
    }
}

/// Copying like SSH (what `gpulab cp` does by default for one source) through the API server: as the login
/// user it arrives identical both ways; as anyone else it is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_through_the_api_server_like_ssh_runs_only_as_the_login_user() {
    let lab = gpulab_testkit::ready_lab::ReadyLab::start().await;
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    let local = tempfile::tempdir().unwrap();
    let original = make_tree(local.path());
    let remote_dir = tempfile::tempdir().unwrap();
    let options = CopyOptions::default();

    let stranger = lab.exec().like_ssh(Some(format!("not-{me}")));
    let refused = remote_dir.path().join("refused");
    for direction in [
        CopyDirection::Upload {
            local: original.clone(),
            remote: refused.display().to_string(),
        },
        CopyDirection::Download {
            remote: original.display().to_string(),
            local: local.path().join("refused"),
        },
    ] {
        let err = stranger
            .copy_with(direction, &options, &Silent)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&format!("not-{me}")), "{err}");
    }
    assert!(!refused.exists() && !local.path().join("refused").exists());
    assert!(temporaries(remote_dir.path()).is_empty());

    let login = lab.exec().like_ssh(Some(me));
    let remote = remote_dir.path().join("tree");
    login
        .copy_with(
            CopyDirection::Upload {
                local: original.clone(),
                remote: remote.display().to_string(),
            },
            &options,
            &Silent,
        )
        .await
        .unwrap();
    let want = expected(&original, options.links);
    assert_same(&want, &remote, "like ssh, uploaded");
    let back = local.path().join("back");
    login
        .copy_with(
            CopyDirection::Download {
                remote: remote.display().to_string(),
                local: back.clone(),
            },
            &options,
            &Silent,
        )
        .await
        .unwrap();
    assert_same(&want, &back, "like ssh, downloaded");
}

/// Starts a copy, and drops it once its first MiB has moved.
async fn interrupt(ssh: &SshSession, direction: CopyDirection) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let reporter = move |event: Event| {
        if let Event::Progress { done, .. } = event
            && done > 0
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    let copy = ssh.copy(direction, &reporter);
    tokio::select! {
        result = copy => panic!("the copy finished before it could be interrupted: {result:?}"),
        _ = rx => {}
    }
}

/// Names in `dir` that a copy leaves while it works.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("gpulab"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_tree_copy_leaves_nothing_at_the_target() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..8 {
        gpulab_testkit::write_noise(&big.join(format!("part{i}")), 8 << 20, i);
    }
    let remote = sshd.dir().join("big");
    interrupt(
        &ssh,
        CopyDirection::Upload {
            local: big.clone(),
            remote: remote.display().to_string(),
        },
    )
    .await;
    // The connection ends with the process that was copying (the CLI's Ctrl-C): the workspace's side sees
    // the stream end and removes its staging directory.
    let _ = ssh.close().await;
    drop(ssh);
    let ssh = connect(&sshd).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !temporaries(sshd.dir()).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!remote.exists(), "a partial tree at the target");
    assert!(
        temporaries(sshd.dir()).is_empty(),
        "{:?}",
        temporaries(sshd.dir())
    );

    // Downloads: the staging directory goes with the dropped copy.
    std::fs::rename(&big, &remote).unwrap();
    let back = local.path().join("back");
    interrupt(
        &ssh,
        CopyDirection::Download {
            remote: remote.display().to_string(),
            local: back.clone(),
        },
    )
    .await;
    assert!(!back.exists(), "a partial tree at the target");
    assert!(
        temporaries(local.path()).is_empty(),
        "{:?}",
        temporaries(local.path())
    );
}

fn names(list: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = list.iter().map(String::as_str).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_sends_what_changed_and_nothing_when_nothing_did() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd).await;
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("project");
    std::fs::create_dir_all(src.join("pkg")).unwrap();
    std::fs::create_dir_all(src.join("build")).unwrap();
    std::fs::write(src.join(".gitignore"), "build/\n*.log\n").unwrap();
    std::fs::write(src.join("train.py"), "print(1)\n").unwrap();
    std::fs::write(src.join("pkg/util.py"), "x = 1\n").unwrap();
    std::fs::write(src.join("build/out.o"), "obj").unwrap();
    std::fs::write(src.join("run.log"), "log").unwrap();
    std::fs::write(src.join("weights.pt"), "big").unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("pkg/m{i}.py")), format!("v = {i}\n")).unwrap();
    }
    let remote = sshd.dir().join("project");
    let up = SyncDirection::Up {
        local: src.clone(),
        remote: remote.display().to_string(),
    };
    let options = SyncOptions {
        exclude: vec!["*.pt".into()],
        ..Default::default()
    };
    let first = sync(&ssh, &up, &options, &Silent).await.unwrap();
    assert_eq!(first.sent.len(), 53, "{:?}", first.sent);
    for ignored in ["build", "run.log", "weights.pt"] {
        assert!(!remote.join(ignored).exists(), "{ignored} was sent");
    }
    assert_eq!(std::fs::read(remote.join("pkg/m7.py")).unwrap(), b"v = 7\n");

    let again = sync(&ssh, &up, &options, &Silent).await.unwrap();
    assert!(
        again.sent.is_empty() && again.deleted.is_empty() && again.updated.is_empty(),
        "a rerun changed something: {again:?}"
    );

    // Changed (same size, newer), new, deleted; an ignored file on the workspace's side is protected.
    std::fs::write(src.join("train.py"), "print(2)\n").unwrap();
    set_mtime(&src.join("train.py"), 2_000_000_000);
    std::fs::write(src.join("pkg/new.py"), "new\n").unwrap();
    std::fs::remove_file(src.join("pkg/m3.py")).unwrap();
    std::fs::write(remote.join("remote.log"), "theirs").unwrap();
    let dry = sync(
        &ssh,
        &up,
        &SyncOptions {
            delete: true,
            dry_run: true,
            ..options.clone()
        },
        &Silent,
    )
    .await
    .unwrap();
    assert_eq!(names(&dry.sent), ["pkg/new.py", "train.py"]);
    assert_eq!(names(&dry.deleted), ["pkg/m3.py"]);
    assert!(
        remote.join("pkg/m3.py").exists(),
        "a dry run changed the target"
    );
    let mirrored = sync(
        &ssh,
        &up,
        &SyncOptions {
            delete: true,
            ..options.clone()
        },
        &Silent,
    )
    .await
    .unwrap();
    assert_eq!(names(&mirrored.sent), ["pkg/new.py", "train.py"]);
    assert_eq!(names(&mirrored.deleted), ["pkg/m3.py"]);
    assert_eq!(
        std::fs::read(remote.join("train.py")).unwrap(),
        b"print(2)\n"
    );
    assert!(!remote.join("pkg/m3.py").exists());
    assert!(
        remote.join("remote.log").exists(),
        "an excluded file was deleted"
    );

    // Same size and time, different bytes: only a checksum sees it.
    std::fs::write(src.join("pkg/util.py"), "x = 2\n").unwrap();
    let meta = std::fs::metadata(remote.join("pkg/util.py")).unwrap();
    set_mtime(&src.join("pkg/util.py"), meta.mtime() as u64);
    let by_time = sync(&ssh, &up, &options, &Silent).await.unwrap();
    assert!(by_time.sent.is_empty(), "{by_time:?}");
    let by_hash = sync(
        &ssh,
        &up,
        &SyncOptions {
            checksum: true,
            ..options.clone()
        },
        &Silent,
    )
    .await
    .unwrap();
    assert_eq!(by_hash.sent, ["pkg/util.py"]);

    // And back: a fresh local mirror of the workspace's copy, then a rerun that fetches nothing.
    let back = local.path().join("back");
    let down = SyncDirection::Down {
        remote: remote.display().to_string(),
        local: back.clone(),
    };
    let fetched = sync(&ssh, &down, &SyncOptions::default(), &Silent)
        .await
        .unwrap();
    assert!(fetched.sent.contains(&"pkg/new.py".to_string()));
    assert_eq!(std::fs::read(back.join("pkg/util.py")).unwrap(), b"x = 2\n");
    assert!(
        !back.join("remote.log").exists(),
        "the workspace's .gitignore applies"
    );
    let again = sync(&ssh, &down, &SyncOptions::default(), &Silent)
        .await
        .unwrap();
    assert!(again.sent.is_empty(), "{again:?}");
}
