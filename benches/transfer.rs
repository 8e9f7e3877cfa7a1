//! Moving files through the private path, gpulab against what a user would otherwise run on the same path,
//! at 0 ms and 20 ms of round trip (the emulator's latency knob, which holds each exec and port-forward
//! stream's bytes for half of it each way).
//!
//! The lab: the Kubernetes emulator in this process, `gpulab up --context` run on it, the pod's port 22
//! routed to a real OpenSSH sshd on loopback (so "the workspace" is this machine's filesystem, and the
//! emulator's exec runs commands here too). Each case prints gpulab's time, the anchor's and the ratio
//! (anchor / gpulab: above 1 is gpulab faster):
//!
//! - one large file up and down: `gpulab cp` (by default one tar stream through the API server's exec)
//!   and `gpulab cp --via ssh` against `scp` through `kubectl port-forward`;
//! - 2,000 × 4 KiB in 20 folders and 20,000 × 1 KiB in 100 folders, up and down: `gpulab cp` against
//!   `scp -r` through `kubectl port-forward` and against `kubectl cp`, and `--via ssh` against `kubectl cp`;
//! - the same with `--via kube` against `kubectl cp`;
//! - `scp` with `ProxyCommand gpulab proxy` (what `gpulab ssh-config` writes) against `scp` through
//!   `kubectl port-forward`, both ways;
//! - `scp` through `gpulab forward 22` against `scp` through `kubectl port-forward`, both ways (the
//!   port-forward alone, without the proxy's pipes);
//! - the rerun of `gpulab sync` over an unchanged 20,000-file tree against `rsync -a` through
//!   `kubectl port-forward` (when rsync is installed);
//! - Python's `Lab.copy_to`/`copy_from` against `gpulab cp`, one large file both ways and 2,000 × 4 KiB
//!   up (when a Python with gpulab installed is found).
//!
//! Reproduce: `cargo build --release -p gpulab-cli && cargo bench -p gpulab-benches --bench transfer`
//! (needs kubectl, sshd and scp; `GPULAB_BIN` names another gpulab binary; `GPULAB_BENCH_LARGE_MIB` sets
//! the large file's size, default 512; `GPULAB_BENCH_LATENCIES=0,20` the round trips in ms;
//! `GPULAB_BENCH_CASES=large,small,kube,proxy,forward,sync,python` which cases run; `GPULAB_BENCH_PYTHON` a
//! Python that imports gpulab, default `.venv/bin/python`: build it with `maturin develop --release`;
//! `GPULAB_PROFILE=1` prints each gpulab run's phase timings under its row; `GPULAB_BENCH_TREES=2000`
//! copies only the trees of those file counts, `GPULAB_BENCH_SCP_R=0` leaves out the `scp -r` anchors).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpulab_core::Provider;
use gpulab_core::naming::KubeNames;
use gpulab_core::spec::SpecLayer;
use gpulab_testkit::kube::{KubeEmulator, NodeSpec};
use gpulab_testkit::sshd::Sshd;
use gpulab_testkit::{LabDir, which};

const CIPHER: &str = "aes128-gcm@openssh.com";

fn gpulab_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GPULAB_BIN") {
        return Some(bin.into());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/gpulab");
    bin.exists().then_some(bin)
}

/// Pass `GPULAB_PROFILE` through (the lab's commands start from an empty environment).
fn pass_profile(command: &mut Command) {
    if let Some(on) = std::env::var_os(gpulab_core::profile::ENV) {
        command.env(gpulab_core::profile::ENV, on);
    }
}

/// Run `command` to its end and return how long it took; panics on failure.
fn timed(mut command: Command, what: &str) -> Duration {
    // The previous run's 512 MiB are still being written back to disk: flush them first, or the next
    // command's start (loading its binary, reading its certificates) waits behind that I/O. This was
    // seconds for `gpulab proxy` (a fresh process per connection), nothing for the anchors' long-lived
    // `kubectl port-forward`.
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // gpulab's phase timings, when the bench runs with them on.
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.starts_with("[profile]") {
            println!("    {what}: {line}");
        }
    }
    took
}

/// `files` files of `size` bytes spread over `dirs` folders under `root/name`.
fn small_tree(root: &Path, name: &str, files: usize, size: usize, dirs: usize) -> PathBuf {
    let tree = root.join(name);
    for i in 0..files {
        let dir = tree.join(format!("d{:03}", i % dirs));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:05}.bin")),
            gpulab_testkit::noise(i as u64, size),
        )
        .unwrap();
    }
    tree
}

fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

struct Bench {
    dir: LabDir,
    sshd: Sshd,
    emu: KubeEmulator,
    gpulab: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    names: KubeNames,
    /// The lab's name, for `gpulab proxy --name` and Python's `Lab.load`.
    name: String,
    key: PathBuf,
    work: tempfile::TempDir,
}

impl Bench {
    fn gpulab(&self, args: &[&str]) -> Command {
        let mut command = self.dir.command(&self.gpulab);
        command.args(args).arg("-q");
        pass_profile(&mut command);
        command
    }

    /// `gpulab cp [--via VIA] FROM TO`.
    fn cp(&self, via: Option<&str>, from: &str, to: &str) -> Command {
        let mut args = vec!["cp"];
        if let Some(via) = via {
            args.extend(["--via", via]);
        }
        args.extend([from, to]);
        self.gpulab(&args)
    }

    fn kubectl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("-n")
            .arg(&self.names.namespace)
            .args(args);
        command
    }

    /// `kubectl port-forward pod :22`, and the local port it listens on.
    fn port_forward(&self) -> (Child, u16) {
        use std::io::BufRead;
        let mut child = self
            .kubectl(&["port-forward", &format!("pod/{}", self.names.pod), ":22"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl port-forward");
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // kubectl says "Handling connection for PORT" on each connection: a closed pipe would kill it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:PORT -> 22"
        let port = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
        (child, port)
    }

    /// `gpulab forward 22` on a free local port, once it accepts connections, and that port.
    fn gpulab_forward(&self) -> (Child, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = self
            .gpulab(&["forward", "22", "--local", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gpulab forward");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "gpulab forward never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, port)
    }

    fn ssh_options(&self) -> Vec<String> {
        [
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
        .chain(["-i".into(), self.key.display().to_string()])
        .collect()
    }

    /// `scp [-r] FROM TO` through the port `port` (a kubectl port-forward).
    fn scp(&self, port: u16, from: &str, to: &str, recursive: bool) -> Command {
        let mut command = Command::new("scp");
        command.args(self.ssh_options()).arg(format!("-P{port}"));
        if recursive {
            command.arg("-r");
        }
        command.args([from, to]);
        command
    }

    fn remote(&self, path: &Path) -> String {
        format!("{}@127.0.0.1:{}", self.sshd.user(), path.display())
    }

    fn fresh(&self, name: &str) -> PathBuf {
        let path = self.work.path().join(name);
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn workspace(&self, name: &str) -> PathBuf {
        let path = self.sshd.dir().join("ws").join(name);
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        path
    }
}

fn row(case: &str, gpulab: Duration, anchor_name: &str, anchor: Duration) {
    println!(
        "{case:<44} gpulab {:>8.2} s   {anchor_name:<26} {:>8.2} s   ratio {:>6.2}x",
        gpulab.as_secs_f64(),
        anchor.as_secs_f64(),
        anchor.as_secs_f64() / gpulab.as_secs_f64()
    );
}

async fn setup(gpulab: PathBuf, kubectl: PathBuf) -> Bench {
    let sshd = Sshd::start();
    let (dir, public_key) = LabDir::new()
        .with_env("GPULAB_SSH_USER", sshd.user())
        .with_ssh_key(None);
    sshd.authorize(&public_key);
    let emu = KubeEmulator::start().await.unwrap();
    emu.add_node(NodeSpec::cpu("system-1"));
    emu.add_node(NodeSpec::gpu("gpu-1"));
    let spec = dir
        .inputs(SpecLayer::default())
        .resolve()
        .unwrap()
        .validate()
        .unwrap();
    let kubeconfig = dir.home().join("emulator.kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    let id = dir.record_lab(
        &spec.spec,
        Provider::Existing {
            kubeconfig: Some(kubeconfig.clone()),
            context: Some("gpulab-emulator".into()),
        },
    );
    sshd.stand_in_for_workspace(&emu, &spec.spec, &id).await;
    let key = dir.home().join(".ssh/id_ed25519");
    let bench = Bench {
        names: KubeNames::new(&spec.spec),
        name: spec.name().to_string(),
        dir,
        sshd,
        emu,
        gpulab,
        kubectl,
        kubeconfig: kubeconfig.clone(),
        key,
        work: tempfile::Builder::new()
            .prefix("gpulab-transfer-bench-")
            .tempdir()
            .unwrap(),
    };
    let up = bench.gpulab(&[
        "up",
        "--context",
        "gpulab-emulator",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
    ]);
    off(move || timed(up, "gpulab up")).await;
    std::fs::create_dir_all(bench.sshd.dir().join("ws")).unwrap();
    bench
}

/// Run a blocking measurement off the runtime that serves the emulator.
async fn off(run: impl FnOnce() -> Duration + Send + 'static) -> Duration {
    off_with(run).await
}

/// Run blocking work off the runtime that serves the emulator.
async fn off_with<T: Send + 'static>(run: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(run).await.unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (Some(gpulab), Some(kubectl), Some(_)) = (
        gpulab_bin(),
        gpulab_testkit::kubectl(),
        gpulab_testkit::sshd::sshd_path(),
    ) else {
        eprintln!(
            "transfer bench skipped: needs a release gpulab (cargo build --release -p gpulab-cli, or GPULAB_BIN), kubectl and sshd"
        );
        return;
    };
    let large_mib: u64 = std::env::var("GPULAB_BENCH_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let latencies: Vec<u64> = std::env::var("GPULAB_BENCH_LATENCIES")
        .unwrap_or_else(|_| "0,20".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let cases = std::env::var("GPULAB_BENCH_CASES")
        .unwrap_or_else(|_| "large,small,kube,proxy,forward,sync,python".into());
    let wants = |case: &str| cases.split(',').any(|c| c.trim() == case);
    // At 20 ms, scp -r pays round trips per file: minutes for 20,000 files.
    let tree_sizes: Vec<usize> = std::env::var("GPULAB_BENCH_TREES")
        .unwrap_or_else(|_| "2000,20000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let scp_r = std::env::var("GPULAB_BENCH_SCP_R").ok().as_deref() != Some("0");
    let bench = std::sync::Arc::new(setup(gpulab, kubectl).await);
    let large = bench.work.path().join("large.bin");
    gpulab_testkit::write_noise(&large, large_mib << 20, 7);
    let trees = [
        (
            "2,000 × 4 KiB",
            small_tree(bench.work.path(), "t2000", 2_000, 4096, 20),
        ),
        (
            "20,000 × 1 KiB",
            small_tree(bench.work.path(), "t20000", 20_000, 1024, 100),
        ),
    ];
    println!(
        "transfer bench: large file {large_mib} MiB; cipher {CIPHER}; one run each; load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for ms in latencies {
        bench.emu.set_latency(Duration::from_millis(ms));
        println!("--- {ms} ms round trip ---");
        let (mut forward, port) = bench.port_forward();
        if wants("large") {
            let b = bench.clone();
            let l = large.clone();
            let g_up = off(move || {
                let to = b.workspace("g-large.bin");
                timed(
                    b.cp(
                        None,
                        &l.display().to_string(),
                        &format!(":{}", to.display()),
                    ),
                    "gpulab cp up",
                )
            })
            .await;
            let b = bench.clone();
            let l = large.clone();
            let s_up = off(move || {
                let to = b.workspace("s-large.bin");
                timed(
                    b.scp(port, &l.display().to_string(), &b.remote(&to), false),
                    "scp up",
                )
            })
            .await;
            row("one large file, upload", g_up, "scp via kubectl pf", s_up);
            let b = bench.clone();
            let l = large.clone();
            let g_up_ssh = off(move || {
                let to = b.workspace("g-large-ssh.bin");
                timed(
                    b.cp(
                        Some("ssh"),
                        &l.display().to_string(),
                        &format!(":{}", to.display()),
                    ),
                    "gpulab cp --via ssh up",
                )
            })
            .await;
            row(
                "one large file, upload --via ssh",
                g_up_ssh,
                "scp via kubectl pf",
                s_up,
            );
            let b = bench.clone();
            let g_down = off(move || {
                let back = b.fresh("g-back.bin");
                let from = b.sshd.dir().join("ws/g-large.bin");
                timed(
                    b.cp(
                        None,
                        &format!(":{}", from.display()),
                        &back.display().to_string(),
                    ),
                    "gpulab cp down",
                )
            })
            .await;
            let b = bench.clone();
            let s_down = off(move || {
                let back = b.fresh("s-back.bin");
                let from = b.sshd.dir().join("ws/s-large.bin");
                timed(
                    b.scp(port, &b.remote(&from), &back.display().to_string(), false),
                    "scp down",
                )
            })
            .await;
            row(
                "one large file, download",
                g_down,
                "scp via kubectl pf",
                s_down,
            );
            let b = bench.clone();
            let g_down_ssh = off(move || {
                let back = b.fresh("g-back-ssh.bin");
                let from = b.sshd.dir().join("ws/g-large.bin");
                timed(
                    b.cp(
                        Some("ssh"),
                        &format!(":{}", from.display()),
                        &back.display().to_string(),
                    ),
                    "gpulab cp --via ssh down",
                )
            })
            .await;
            row(
                "one large file, download --via ssh",
                g_down_ssh,
                "scp via kubectl pf",
                s_down,
            );
        }
        for (label, tree) in &trees {
            if !wants("small") && !wants("kube") {
                break;
            }
            let files = count_files(tree);
            if !tree_sizes.contains(&files) {
                continue;
            }
            let src = tree.display().to_string();
            if wants("small") {
                let (b, s) = (bench.clone(), src.clone());
                let g = off(move || {
                    let to = b.workspace("g-tree");
                    timed(
                        b.cp(None, &s, &format!(":{}", to.display())),
                        "gpulab cp tree",
                    )
                })
                .await;
                assert_eq!(count_files(&bench.sshd.dir().join("ws/g-tree")), files);
                let (b, s) = (bench.clone(), src.clone());
                let scp = scp_r.then(|| {
                    off(move || {
                        let to = b.workspace("s-tree");
                        timed(b.scp(port, &s, &b.remote(&to), true), "scp -r")
                    })
                });
                let scp = match scp {
                    Some(scp) => Some(scp.await),
                    None => None,
                };
                let (b, s) = (bench.clone(), src.clone());
                let kcp = off(move || {
                    let to = b.workspace("k-tree");
                    timed(
                        b.kubectl(&["cp", &s, &format!("{}:{}", b.names.pod, to.display())]),
                        "kubectl cp",
                    )
                })
                .await;
                if let Some(scp) = scp {
                    row(&format!("{label}, upload"), g, "scp -r via kubectl pf", scp);
                }
                row(&format!("{label}, upload"), g, "kubectl cp", kcp);
                let (b, s) = (bench.clone(), src.clone());
                let g_ssh = off(move || {
                    let to = b.workspace("g-tree-ssh");
                    timed(
                        b.cp(Some("ssh"), &s, &format!(":{}", to.display())),
                        "gpulab cp --via ssh tree",
                    )
                })
                .await;
                row(
                    &format!("{label}, upload --via ssh"),
                    g_ssh,
                    "kubectl cp",
                    kcp,
                );
                let b = bench.clone();
                let g = off(move || {
                    let back = b.fresh("g-tree-back");
                    let from = b.sshd.dir().join("ws/g-tree");
                    timed(
                        b.cp(
                            None,
                            &format!(":{}", from.display()),
                            &back.display().to_string(),
                        ),
                        "gpulab cp tree down",
                    )
                })
                .await;
                let b = bench.clone();
                let scp = scp_r.then(|| {
                    off(move || {
                        let back = b.fresh("s-tree-back");
                        let from = b.sshd.dir().join("ws/g-tree");
                        timed(
                            b.scp(port, &b.remote(&from), &back.display().to_string(), true),
                            "scp -r down",
                        )
                    })
                });
                let scp = match scp {
                    Some(scp) => Some(scp.await),
                    None => None,
                };
                let b = bench.clone();
                let kcp = off(move || {
                    let back = b.fresh("k-tree-back");
                    let from = b.sshd.dir().join("ws/g-tree");
                    timed(
                        b.kubectl(&[
                            "cp",
                            &format!("{}:{}", b.names.pod, from.display()),
                            &back.display().to_string(),
                        ]),
                        "kubectl cp down",
                    )
                })
                .await;
                if let Some(scp) = scp {
                    row(
                        &format!("{label}, download"),
                        g,
                        "scp -r via kubectl pf",
                        scp,
                    );
                }
                row(&format!("{label}, download"), g, "kubectl cp", kcp);
                let b = bench.clone();
                let g_ssh = off(move || {
                    let back = b.fresh("g-tree-back-ssh");
                    let from = b.sshd.dir().join("ws/g-tree");
                    timed(
                        b.cp(
                            Some("ssh"),
                            &format!(":{}", from.display()),
                            &back.display().to_string(),
                        ),
                        "gpulab cp --via ssh tree down",
                    )
                })
                .await;
                row(
                    &format!("{label}, download --via ssh"),
                    g_ssh,
                    "kubectl cp",
                    kcp,
                );
            }
            if wants("kube") {
                let (b, s) = (bench.clone(), src.clone());
                let g = off(move || {
                    let to = b.workspace("gk-tree");
                    timed(
                        b.cp(Some("kube"), &s, &format!(":{}", to.display())),
                        "gpulab cp --via kube tree",
                    )
                })
                .await;
                let (b, s) = (bench.clone(), src.clone());
                let kcp = off(move || {
                    let to = b.workspace("k-tree");
                    timed(
                        b.kubectl(&["cp", &s, &format!("{}:{}", b.names.pod, to.display())]),
                        "kubectl cp",
                    )
                })
                .await;
                row(&format!("{label}, upload --via kube"), g, "kubectl cp", kcp);
            }
        }
        if wants("kube") {
            let (b, l) = (bench.clone(), large.clone());
            let g = off(move || {
                let to = b.workspace("gk-large.bin");
                timed(
                    b.cp(
                        Some("kube"),
                        &l.display().to_string(),
                        &format!(":{}", to.display()),
                    ),
                    "gpulab cp --via kube",
                )
            })
            .await;
            let (b, l) = (bench.clone(), large.clone());
            let kcp = off(move || {
                let to = b.workspace("k-large.bin");
                timed(
                    b.kubectl(&[
                        "cp",
                        &l.display().to_string(),
                        &format!("{}:{}", b.names.pod, to.display()),
                    ]),
                    "kubectl cp large",
                )
            })
            .await;
            row("one large file, upload --via kube", g, "kubectl cp", kcp);
            let b = bench.clone();
            let g = off(move || {
                let back = b.fresh("gk-back.bin");
                let from = b.sshd.dir().join("ws/gk-large.bin");
                timed(
                    b.cp(
                        Some("kube"),
                        &format!(":{}", from.display()),
                        &back.display().to_string(),
                    ),
                    "gpulab cp --via kube down",
                )
            })
            .await;
            let b = bench.clone();
            let kcp = off(move || {
                let back = b.fresh("k-back.bin");
                let from = b.sshd.dir().join("ws/gk-large.bin");
                timed(
                    b.kubectl(&[
                        "cp",
                        &format!("{}:{}", b.names.pod, from.display()),
                        &back.display().to_string(),
                    ]),
                    "kubectl cp large down",
                )
            })
            .await;
            row("one large file, download --via kube", g, "kubectl cp", kcp);
        }
        if wants("proxy") {
            let proxy = format!(
                "ProxyCommand={} proxy --name {}",
                bench.gpulab.display(),
                bench.name
            );
            for upload in [true, false] {
                let (b, l, p) = (bench.clone(), large.clone(), proxy.clone());
                let g = off(move || {
                    let mut command = Command::new("scp");
                    command
                        .current_dir(b.dir.work())
                        .env("HOME", b.dir.home())
                        .envs(&b.dir.env)
                        .args(b.ssh_options())
                        .args(["-o", &p]);
                    let remote = format!(
                        "{}@gpulab:{}",
                        b.sshd.user(),
                        b.sshd.dir().join("ws/p-large.bin").display()
                    );
                    if upload {
                        command.args([&l.display().to_string(), &remote]);
                    } else {
                        command.args([&remote, &b.fresh("p-back.bin").display().to_string()]);
                    }
                    timed(command, "scp via gpulab proxy")
                })
                .await;
                let (b, l) = (bench.clone(), large.clone());
                let s = off(move || {
                    let remote = b.remote(&b.sshd.dir().join("ws/p-large.bin"));
                    if upload {
                        timed(
                            b.scp(port, &l.display().to_string(), &remote, false),
                            "scp up",
                        )
                    } else {
                        timed(
                            b.scp(
                                port,
                                &remote,
                                &b.fresh("s-back.bin").display().to_string(),
                                false,
                            ),
                            "scp down",
                        )
                    }
                })
                .await;
                let way = if upload { "upload" } else { "download" };
                row(
                    &format!("scp via gpulab proxy, {way}"),
                    g,
                    "scp via kubectl pf",
                    s,
                );
            }
        }
        if wants("forward") {
            // The same scp through `gpulab forward` (gpulab's port-forward, no stdio pipes) against
            // `kubectl port-forward`: what the proxy rows owe to the port-forward itself.
            let b = bench.clone();
            let (mut gpulab_forward, gpulab_port) = off_with(move || b.gpulab_forward()).await;
            for upload in [true, false] {
                let mut times = Vec::new();
                for through in [gpulab_port, port] {
                    let (b, l) = (bench.clone(), large.clone());
                    times.push(
                        off(move || {
                            let remote = b.remote(&b.sshd.dir().join("ws/f-large.bin"));
                            let back = b.fresh("f-back.bin").display().to_string();
                            let (from, to) = if upload {
                                (l.display().to_string(), remote)
                            } else {
                                (remote, back)
                            };
                            timed(b.scp(through, &from, &to, false), "scp via a forward")
                        })
                        .await,
                    );
                }
                let way = if upload { "upload" } else { "download" };
                row(
                    &format!("scp via gpulab forward, {way}"),
                    times[0],
                    "scp via kubectl pf",
                    times[1],
                );
            }
            let _ = gpulab_forward.kill();
            let _ = gpulab_forward.wait();
        }
        if wants("sync") {
            let tree = trees[1].1.display().to_string();
            let (b, t) = (bench.clone(), tree.clone());
            let to = bench.workspace("sync-tree");
            let to2 = to.clone();
            off(move || {
                timed(
                    b.gpulab(&["sync", &t, &format!(":{}", to2.display())]),
                    "gpulab sync (first)",
                )
            })
            .await;
            let (b, t, to2) = (bench.clone(), tree.clone(), to.clone());
            let g = off(move || {
                timed(
                    b.gpulab(&["sync", &t, &format!(":{}", to2.display())]),
                    "gpulab sync (rerun)",
                )
            })
            .await;
            if which("rsync").is_some() {
                let (b, t) = (bench.clone(), tree.clone());
                let rsync = move |b: &Bench| {
                    let mut command = Command::new("rsync");
                    let ssh = format!("ssh {} -p {port}", b.ssh_options().join(" "));
                    command.args([
                        "-a",
                        "-e",
                        &ssh,
                        &format!("{t}/"),
                        &format!("{}/", b.remote(&b.sshd.dir().join("ws/rsync-tree"))),
                    ]);
                    command
                };
                let b2 = b.clone();
                let r = rsync.clone();
                off(move || timed(r(&b2), "rsync (first)")).await;
                let r = off(move || timed(rsync(&b), "rsync (rerun)")).await;
                row(
                    "sync rerun, 20,000 unchanged files",
                    g,
                    "rsync -a via kubectl pf",
                    r,
                );
            } else {
                println!(
                    "{:<44} gpulab {:>8.2} s   (rsync is not installed: no anchor)",
                    "sync rerun, 20,000 unchanged files",
                    g.as_secs_f64()
                );
            }
        }
        if wants("python") {
            match python_with_gpulab() {
                Some(python) => python_cases(&bench, &python, &large, &trees[0].1).await,
                None => println!(
                    "python cases skipped: no Python that imports gpulab (GPULAB_BENCH_PYTHON)"
                ),
            }
        }
        let _ = forward.kill();
        let _ = forward.wait();
    }
}

/// `GPULAB_BENCH_PYTHON`, else the repository's `.venv/bin/python`, if it imports gpulab.
fn python_with_gpulab() -> Option<PathBuf> {
    let python = std::env::var_os("GPULAB_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let imports = Command::new(&python)
        .args(["-c", "import gpulab"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    imports.then_some(python)
}

/// Python's `Lab.copy_to`/`copy_from` (a fresh interpreter each, as a script would) against `gpulab cp`.
async fn python_cases(bench: &std::sync::Arc<Bench>, python: &Path, large: &Path, tree: &Path) {
    let script = |method: &str| {
        format!(
            "import sys, gpulab; gpulab.Lab.load(sys.argv[1]).{method}(sys.argv[2], sys.argv[3])"
        )
    };
    let cases = [
        (
            "one large file, upload",
            "copy_to",
            large,
            "py-large.bin",
            true,
        ),
        (
            "one large file, download",
            "copy_from",
            large,
            "py-large.bin",
            false,
        ),
        ("2,000 × 4 KiB, upload", "copy_to", tree, "py-tree", true),
    ];
    for (label, method, source, name, upload) in cases {
        let mut timings = Vec::new();
        for python in [Some(python.to_path_buf()), None] {
            let (b, source, script) = (bench.clone(), source.to_path_buf(), script(method));
            let name = format!("{}{name}", if python.is_some() { "py-" } else { "g-" });
            timings.push(
                off(move || {
                    let remote = b.sshd.dir().join("ws").join(&name);
                    let (from, to) = if upload {
                        let _ = b.workspace(&name);
                        (source.display().to_string(), remote.display().to_string())
                    } else {
                        let back = b.fresh(&format!("{name}-back"));
                        (remote.display().to_string(), back.display().to_string())
                    };
                    match python {
                        Some(python) => {
                            let mut command = b.dir.command(&python);
                            command.args(["-c", &script, &b.name, &from, &to]);
                            pass_profile(&mut command);
                            timed(command, "python copy")
                        }
                        None => {
                            let (from, to) = if upload {
                                (from, format!(":{to}"))
                            } else {
                                (format!(":{from}"), to)
                            };
                            timed(b.cp(None, &from, &to), "gpulab cp")
                        }
                    }
                })
                .await,
            );
        }
        // Here the anchor is gpulab cp: above 1 is Python faster.
        row(
            &format!("python {label}"),
            timings[0],
            "gpulab cp",
            timings[1],
        );
    }
}
