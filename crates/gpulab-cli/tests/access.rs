//! `gpulab ssh` and `gpulab cp` end to end: the real binary, run as a user would in a directory of its own,
//! against a lab that `gpulab up --context` brought up on the Kubernetes emulator, whose pod's port 22
//! reaches a real OpenSSH sshd (gpulab_testkit::sshd) through the emulator's port-forward. The lab's host
//! key secret is created beforehand with the sshd's host key, so the key `up` pins is the one sshd shows;
//! the emulator runs in this test process, the `gpulab` commands in their own.
//!
//! Paths "in the workspace" are on this machine: the sshd serves its own filesystem, and the emulator's
//! exec (for `--via kube`) runs commands here too.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpulab_core::Provider;
use gpulab_core::spec::SpecLayer;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::sshd::Sshd;
use gpulab_testkit::{LabDir, set_mtime, stderr, stdout, which};

/// A guard against hangs only; no test asserts how long anything takes.
const PATIENCE: Duration = Duration::from_secs(60);

/// A lab that is up, as far as the `gpulab` binary in `dir` can tell, and the sshd behind its port 22.
struct CliLab {
    dir: LabDir,
    sshd: Sshd,
    _emulator: KubeEmulator,
}

impl CliLab {
    /// Start sshd and the emulator, give the user an SSH key sshd accepts, and run `gpulab up --context`.
    /// `passphrase` encrypts the user's key.
    async fn up(passphrase: Option<&str>) -> CliLab {
        let sshd = Sshd::start();
        // sshd runs as this user and admits only this user; the workspace image's is root.
        let (dir, public_key) = LabDir::new()
            .with_env("GPULAB_SSH_USER", sshd.user())
            .with_ssh_key(passphrase);
        sshd.authorize(&public_key);

        let emulator = KubeEmulator::start().await.unwrap();
        emulator.add_node(NodeSpec::cpu("system-1"));
        emulator.add_node(NodeSpec::gpu("gpu-1"));
        let spec = dir
            .inputs(SpecLayer::default())
            .resolve()
            .unwrap()
            .validate()
            .unwrap();
        let kubeconfig = dir.home().join("emulator.kubeconfig");
        emulator.write_kubeconfig(&kubeconfig).unwrap();
        let id = dir.record_lab(
            &spec.spec,
            Provider::Existing {
                kubeconfig: Some(kubeconfig.clone()),
                context: Some("gpulab-emulator".into()),
            },
        );
        sshd.stand_in_for_workspace(&emulator, &spec.spec, &id)
            .await;
        let lab = CliLab {
            dir,
            sshd,
            _emulator: emulator,
        };
        let kubeconfig = kubeconfig.display().to_string();
        let out = lab
            .gpulab(&[
                "up",
                "--context",
                "gpulab-emulator",
                "--kubeconfig",
                &kubeconfig,
            ])
            .await;
        assert!(out.status.success(), "gpulab up failed:\n{}", stderr(&out));
        lab
    }

    /// A `gpulab` command in the lab's directory, with standard input closed.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.dir.command(env!("CARGO_BIN_EXE_gpulab").as_ref());
        command.args(args).stdin(Stdio::null());
        command
    }

    /// Run `gpulab ARGS` to its end (on a blocking thread: the emulator serves it from this runtime).
    async fn gpulab(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        let run = tokio::task::spawn_blocking(move || command.output().expect("run gpulab"));
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap_or_else(|_| panic!("gpulab {args:?} hung"))
            .unwrap()
    }

    /// Run `gpulab ARGS` and expect it to succeed.
    async fn ok(&self, args: &[&str]) -> Output {
        let out = self.gpulab(args).await;
        assert!(
            out.status.success(),
            "gpulab {args:?} failed ({:?}):\n{}\n--- sshd log ---\n{}",
            out.status.code(),
            stderr(&out),
            self.sshd.log()
        );
        out
    }

    /// Run `gpulab ARGS`, expect exit code `code`, and return its standard error.
    async fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.gpulab(args).await;
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "gpulab {args:?}: expected exit {code}; stderr:\n{err}"
        );
        err
    }

    /// The working directory the commands run in.
    fn work(&self) -> PathBuf {
        self.dir.work()
    }
}

/// A project with files of several modes and old modification times, a subdirectory and a hidden file:
/// `project/{train.py 0755, util.py 0640, .env 0600, data/{train.csv, test.csv} 0644}`.
fn make_project(root: &Path) -> PathBuf {
    let project = root.join("project");
    std::fs::create_dir_all(project.join("data")).unwrap();
    let files = [
        ("train.py", 0o755, 300_000),
        ("util.py", 0o640, 1_234),
        (".env", 0o600, 17),
        ("data/train.csv", 0o644, 2 << 20),
        ("data/test.csv", 0o644, 0),
    ];
    for (i, (name, mode, len)) in files.into_iter().enumerate() {
        let path = project.join(name);
        std::fs::write(&path, gpulab_testkit::noise(i as u64, len)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&path, 1_500_000_000 + i as u64 * 86_400);
    }
    std::fs::set_permissions(project.join("data"), std::fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&project.join("data"), 1_400_000_000);
    set_mtime(&project, 1_300_000_000);
    project
}

/// What a copy must keep of one file or directory.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    dir: bool,
    mode: u32,
    mtime: i64,
    len: u64,
}

/// Every entry under `root` (and `root` itself, as ""), with its content for files.
fn tree(root: &Path) -> BTreeMap<String, (Entry, Vec<u8>)> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let meta =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let entry = Entry {
            dir: meta.is_dir(),
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            len: if meta.is_dir() { 0 } else { meta.len() },
        };
        let bytes = if meta.is_dir() {
            for child in std::fs::read_dir(&path).unwrap() {
                let name = child.unwrap().file_name().into_string().unwrap();
                stack.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
            Vec::new()
        } else {
            std::fs::read(&path).unwrap()
        };
        entries.insert(rel, (entry, bytes));
    }
    entries
}

/// `copy` holds what `original` holds: the same names (no temporary files left over), kinds, modes,
/// modification times and bytes.
fn assert_same_tree(original: &Path, copy: &Path) {
    let (a, b) = (tree(original), tree(copy));
    let names = |t: &BTreeMap<String, _>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&a),
        names(&b),
        "{} and {} hold different names",
        original.display(),
        copy.display()
    );
    for (rel, (entry, bytes)) in &a {
        let (copied, copied_bytes) = &b[rel];
        assert_eq!(
            entry,
            copied,
            "{rel:?}: kind, mode, mtime or size differ between {} and {}",
            original.display(),
            copy.display()
        );
        assert!(bytes == copied_bytes, "{rel:?}: the bytes differ");
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_copies_directories_and_globs_both_ways_keeping_modes_and_times() {
    let lab = CliLab::up(None).await;
    let project = make_project(&lab.work());
    // "The workspace": a directory this machine's sshd serves.
    let ws = lab.sshd.dir().join("workspace");
    std::fs::create_dir_all(&ws).unwrap();
    let w = ws.display().to_string();
    let remote = |path: &str| format!(":{w}/{path}");

    // A directory up, into an existing directory: one source, so one tar stream through exec.
    let out = lab.ok(&["cp", "project", &format!(":{w}/")]).await;
    assert_same_tree(&project, &ws.join("project"));
    assert!(
        stderr(&out).contains("copied 5 file(s)")
            && stderr(&out).contains("through the API server's exec"),
        "the summary: {}",
        stderr(&out)
    );
    // The same over SSH, when asked.
    let out = lab
        .ok(&["cp", "--via", "ssh", "project", &remote("over-ssh")])
        .await;
    assert_same_tree(&project, &ws.join("over-ssh"));
    assert!(stderr(&out).contains("over SSH"), "{}", stderr(&out));

    // A quoted local glob, expanded by gpulab (a hidden file is not matched by `*`).
    std::fs::create_dir(ws.join("py")).unwrap();
    lab.ok(&["cp", "project/*.py", &remote("py/")]).await;
    assert_eq!(names_in(&ws.join("py")), ["train.py", "util.py"]);
    for name in ["train.py", "util.py"] {
        assert_same_tree(&project.join(name), &ws.join("py").join(name));
    }

    // Several sources (as the shell expands them), a file and a directory.
    std::fs::create_dir(ws.join("several")).unwrap();
    let out = lab
        .ok(&["cp", "project/train.py", "project/data", &remote("several")])
        .await;
    assert!(stderr(&out).contains("over SSH"), "{}", stderr(&out));
    assert_eq!(names_in(&ws.join("several")), ["data", "train.py"]);
    assert_same_tree(&project.join("data"), &ws.join("several/data"));
    assert_same_tree(&project.join("train.py"), &ws.join("several/train.py"));

    // A directory down, to a new name.
    lab.ok(&["cp", &remote("project"), "back"]).await;
    assert_same_tree(&project, &lab.work().join("back"));

    // Remote globs, in the last component and in the middle, several patterns into one directory.
    std::fs::create_dir(lab.work().join("globbed")).unwrap();
    lab.ok(&[
        "cp",
        &remote("project/*.py"),
        &remote("project/d?t[a-z]/*.csv"),
        "globbed",
    ])
    .await;
    assert_eq!(
        names_in(&lab.work().join("globbed")),
        ["test.csv", "train.csv", "train.py", "util.py"]
    );
    for (from, name) in [
        ("train.py", "train.py"),
        ("util.py", "util.py"),
        ("data/train.csv", "train.csv"),
        ("data/test.csv", "test.csv"),
    ] {
        assert_same_tree(&project.join(from), &lab.work().join("globbed").join(name));
    }

    // The same through the API server (tar), remote globs expanded from the remote shell's listing.
    std::fs::create_dir(lab.work().join("kube")).unwrap();
    lab.ok(&["cp", "--via", "kube", &remote("project/data/*"), "kube"])
        .await;
    assert_eq!(
        names_in(&lab.work().join("kube")),
        ["test.csv", "train.csv"]
    );
    for name in ["test.csv", "train.csv"] {
        assert_same_tree(
            &project.join("data").join(name),
            &lab.work().join("kube").join(name),
        );
    }
    std::fs::create_dir(ws.join("kube-up")).unwrap();
    lab.ok(&["cp", "--via", "kube", "project/*.py", &remote("kube-up")])
        .await;
    assert_eq!(names_in(&ws.join("kube-up")), ["train.py", "util.py"]);
    assert_same_tree(&project.join("train.py"), &ws.join("kube-up/train.py"));

    // A glob that matches nothing is an error naming it, on either side and either way.
    let pattern = format!("{w}/project/*.parquet");
    let err = lab.fails(&["cp", &format!(":{pattern}"), "out"], 1).await;
    assert!(err.contains(&pattern), "does not name the pattern:\n{err}");
    let err = lab
        .fails(&["cp", "--via", "kube", &format!(":{pattern}"), "out"], 1)
        .await;
    assert!(err.contains(&pattern), "does not name the pattern:\n{err}");
    let err = lab
        .fails(&["cp", "project/*.parquet", &remote("py/")], 1)
        .await;
    assert!(
        err.contains("project/*.parquet"),
        "does not name the pattern:\n{err}"
    );
    assert!(!lab.work().join("out").exists());

    // Several sources need a directory to go into: the error names the target.
    let target = format!("{w}/project/train.py");
    let err = lab
        .fails(
            &[
                "cp",
                "project/train.py",
                "project/util.py",
                &format!(":{target}"),
            ],
            1,
        )
        .await;
    assert!(err.contains(&target), "does not name the target:\n{err}");
    let err = lab
        .fails(&["cp", &remote("project/*.py"), "project/util.py"], 1)
        .await;
    assert!(
        err.contains("project/util.py") && err.contains("not a directory"),
        "does not name the target:\n{err}"
    );
    // So does a target written with a trailing `/`.
    let err = lab
        .fails(&["cp", "project/train.py", &remote("missing/")], 1)
        .await;
    assert!(
        err.contains(&format!("{w}/missing/")),
        "does not name the target:\n{err}"
    );
    let err = lab
        .fails(&["cp", &remote("project/train.py"), "missing/"], 1)
        .await;
    assert!(err.contains("missing/"), "does not name the target:\n{err}");
    assert!(!ws.join("missing").exists() && !lab.work().join("missing").exists());
    assert_same_tree(&project, &ws.join("project"));

    // Both sides remote, or both local: bad input.
    let err = lab
        .fails(&["cp", &remote("project"), &remote("elsewhere")], 2)
        .await;
    assert!(err.contains("one side must be local"), "{err}");
    let err = lab.fails(&["cp", "project", "elsewhere"], 2).await;
    assert!(err.contains("one side must be local"), "{err}");
    let err = lab
        .fails(&["cp", "project", &remote("project"), "elsewhere"], 2)
        .await;
    assert!(
        err.contains("all be local or all in the workspace"),
        "{err}"
    );
    assert!(!lab.work().join("elsewhere").exists() && !ws.join("elsewhere").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_one_command_and_returns_its_exit_code() {
    let lab = CliLab::up(None).await;
    let out = lab
        .gpulab(&["ssh", "--", "echo", "hello from $(id -un);", "exit 7"])
        .await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("hello from {}\n", lab.sshd.user()),
        "the words make one command line, run by the remote shell"
    );

    let out = lab
        .ok(&["ssh", "--", "test -t 0 || echo no terminal"])
        .await;
    assert_eq!(stdout(&out), "no terminal\n", "a command gets no PTY");
}

/// Wait until `check` holds for what the terminal showed, or panic with it.
fn wait_for(seen: &Mutex<Vec<u8>>, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {what}; the terminal shows:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_ssh_session_has_the_terminal_size_and_returns_the_exit_code() {
    let lab = CliLab::up(None).await;
    let (cols, rows) = (111, 37);
    let (status, text) = in_terminal(lab.command(&["ssh"]), (cols, rows), |controller, seen| {
        // The remote shell has started (and the local terminal is in raw mode) once it shows anything.
        wait_for(seen, "the remote shell", |text| !text.is_empty());
        controller.write_all(b"stty size; exit 3\r").unwrap();
    })
    .await;
    assert!(
        text.contains(&format!("{rows} {cols}")),
        "`stty size` in the workspace does not show the terminal's {rows} rows and {cols} columns:\n{text}"
    );
    assert_eq!(status.code(), Some(3), "the terminal shows:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_is_unlocked_with_a_passphrase_asked_on_the_terminal() {
    let lab = CliLab::up(Some("correct horse")).await;
    // `setsid -c` makes the pseudo-terminal gpulab's controlling terminal, so /dev/tty is it, as in a
    // user's shell (gpulab asks there, as OpenSSH does, even when stdin is redirected).
    let setsid = which("setsid").expect("setsid (util-linux)");
    let gpulab = env!("CARGO_BIN_EXE_gpulab");
    let command = lab.dir.command(&setsid);
    let mut command = command;
    command.args(["-c", gpulab, "ssh", "-T", "--", "echo unlocked"]);
    let (status, text) = in_terminal(command, (80, 24), |controller, seen| {
        wait_for(seen, "the passphrase prompt", |text| {
            text.contains("Enter passphrase for key")
        });
        controller.write_all(b"correct horse\n").unwrap();
    })
    .await;
    assert_eq!(status.code(), Some(0), "the terminal shows:\n{text}");
    assert!(text.contains("unlocked"), "{text}");
    assert!(
        !text.contains("correct horse"),
        "the passphrase must not be echoed:\n{text}"
    );
}

/// Run `command` with a pseudo-terminal of `size` (columns, rows) as its standard streams, let `interact`
/// type into it, and return how it ended and everything it showed.
async fn in_terminal(
    mut command: std::process::Command,
    (cols, rows): (u16, u16),
    interact: impl FnOnce(&mut std::fs::File, &Mutex<Vec<u8>>) + Send + 'static,
) -> (std::process::ExitStatus, String) {
    let (controller, terminal) = gpulab_testkit::pty_pair(cols, rows);
    command
        .stdin(terminal.try_clone().unwrap())
        .stdout(terminal.try_clone().unwrap())
        .stderr(terminal);
    let mut child = command.spawn().expect("run gpulab");
    // Our copies of the terminal side go, so that the controller reads EOF once the program exits.
    drop(command);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = controller.try_clone().unwrap();
    let reading = std::thread::spawn({
        let seen = seen.clone();
        move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no process has the terminal open.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });

    let status = tokio::task::spawn_blocking({
        let seen = seen.clone();
        move || {
            let mut controller = controller;
            interact(&mut controller, &seen);
            let deadline = Instant::now() + PATIENCE;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "gpulab did not end; the terminal shows:\n{}",
                        String::from_utf8_lossy(&seen.lock().unwrap())
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            drop(controller);
            status
        }
    })
    .await
    .unwrap();
    reading.join().unwrap();
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    (status, text)
}
