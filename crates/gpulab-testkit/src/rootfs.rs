//! Real root filesystems and containers for the Kubernetes emulator's kubelet: a Debian or Ubuntu root
//! made with `debootstrap` from the distribution's package registry (cached under
//! `~/.cache/gpulab-rootfs`, built once), and a container started from a fresh copy of it with
//! bubblewrap: its own PID, mount, IPC, UTS and network namespaces, the pod's command, environment and
//! working directory, and its volumes bound from host folders.
//!
//! The network: each container has its own network namespace, so the workspace's sshd binds port 22 and
//! Jupyter 8888 on *its* loopback, exactly as in a pod, and two containers never collide (with the host's
//! namespace shared, sshd would listen on the machine's own port 22). `slirp4netns` gives the namespace a
//! user-space NAT to the outside, through which apt and pip reach the same package registries as the host
//! (its CA bundle and pip settings are copied in). port-forward connects from a thread that has entered
//! the container's namespace ([`Container::connect`]), so it reaches the container's loopback, as the
//! kubelet's port-forward does; exec runs the command with `nsenter` in all of the container's
//! namespaces and its root ([`Container::exec_command`]).
//!
//! Needs root (bubblewrap's namespaces, `nsenter`), `debootstrap`, `bwrap`, `slirp4netns` and `nsenter`
//! (`scripts/install-deps` installs them); [`missing_tools`] says what is not there.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::which;

/// The tools the real-root-filesystem mode needs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("bwrap", "bubblewrap"),
    ("slirp4netns", "slirp4netns"),
    ("nsenter", "util-linux"),
];

/// The version of how roots are built; part of the cache key, so a change rebuilds them.
const BUILD_VERSION: u32 = 1;

/// What keeps the real-root-filesystem mode from running here, in words (`None`: nothing).
pub fn missing_tools() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(
            "the real-root-filesystem mode needs root (bubblewrap's namespaces, nsenter)".into(),
        );
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {}; scripts/install-deps installs them",
            missing.join(", ")
        )
    })
}

/// A distribution release to build a root of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `debian` or `ubuntu`.
    pub family: &'static str,
    /// The release's code name (`bookworm`, `jammy`, `noble`).
    pub suite: &'static str,
    /// Its version, for messages (`12`, `22.04`, `24.04`).
    pub version: &'static str,
}

impl Distro {
    /// Debian 12, the default: from the same Debian mirror the host's apt uses.
    pub const DEBIAN_12: Distro = Distro {
        family: "debian",
        suite: "bookworm",
        version: "12",
    };
    /// Ubuntu 22.04, the base of NVIDIA's `…-ubuntu22.04` CUDA images.
    pub const UBUNTU_22_04: Distro = Distro {
        family: "ubuntu",
        suite: "jammy",
        version: "22.04",
    };
    /// Ubuntu 24.04, the base of NVIDIA's `…-ubuntu24.04` CUDA images.
    pub const UBUNTU_24_04: Distro = Distro {
        family: "ubuntu",
        suite: "noble",
        version: "24.04",
    };

    /// The mirror to bootstrap from: for Debian, the one the host's apt sources name (so this machine's
    /// registry is used); for Ubuntu, `None`, which is debootstrap's own default for the release.
    fn mirror(&self) -> Option<String> {
        if self.family != "debian" {
            return None;
        }
        host_debian_mirror()
    }

    /// debootstrap's script for the suite (its scripts for newer Ubuntu releases are all `gutsy`'s).
    fn script(&self) -> Option<&'static str> {
        (self.family == "ubuntu").then_some("gutsy")
    }

    /// The apt sources the official `ubuntu:<version>` image ships (the base of NVIDIA's CUDA images):
    /// all four components, with `-updates`, `-backports` and `-security`. debootstrap writes only
    /// `<suite> main`, where packages the Dockerfile names (`python3-venv` on 22.04 is in universe) have
    /// no candidate. 24.04 moved to deb822 `ubuntu.sources`; see
    /// <https://github.com/docker-library/docs/blob/master/ubuntu/README.md> and
    /// <https://discourse.ubuntu.com/t/spec-apt-deb822-sources-by-default/29333>. `None` for Debian,
    /// whose `debian:bookworm` image has `main` alone, as debootstrap writes.
    fn image_apt_sources(&self) -> Option<(&'static str, String)> {
        if self.family != "ubuntu" {
            return None;
        }
        let suite = self.suite;
        const COMPONENTS: &str = "main restricted universe multiverse";
        const ARCHIVE: &str = "http://archive.ubuntu.com/ubuntu/";
        const SECURITY: &str = "http://security.ubuntu.com/ubuntu/";
        if self.suite == "jammy" {
            let text = [
                suite,
                &format!("{suite}-updates"),
                &format!("{suite}-backports"),
            ]
            .iter()
            .map(|s| format!("deb {ARCHIVE} {s} {COMPONENTS}\n"))
            .chain([format!("deb {SECURITY} {suite}-security {COMPONENTS}\n")])
            .collect();
            return Some(("etc/apt/sources.list", text));
        }
        let keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
        Some((
            "etc/apt/sources.list.d/ubuntu.sources",
            format!(
                "Types: deb\nURIs: {ARCHIVE}\nSuites: {suite} {suite}-updates {suite}-backports\n\
                 Components: {COMPONENTS}\nSigned-By: {keyring}\n\n\
                 Types: deb\nURIs: {SECURITY}\nSuites: {suite}-security\n\
                 Components: {COMPONENTS}\nSigned-By: {keyring}\n"
            ),
        ))
    }
}

/// The first Debian archive URI in the host's apt sources (one-line or deb822 format), if any.
fn host_debian_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if line.starts_with("deb ") {
                line.split_whitespace()
                    .skip(1)
                    .filter(|w| !w.starts_with('['))
                    .take(1)
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(uri) = uris
                .into_iter()
                .find(|u| u.trim_end_matches('/').ends_with("/debian"))
            {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// A root filesystem in the cache, ready to copy for containers.
#[derive(Debug, Clone)]
pub struct RootFs {
    /// The distribution.
    pub distro: Distro,
    /// The root directory.
    pub path: PathBuf,
    /// How long building it took, when this call built it (`None`: it was cached).
    pub built_in: Option<Duration>,
}

/// Where roots are cached: `$GPULAB_ROOTFS_CACHE`, else `~/.cache/gpulab-rootfs`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GPULAB_ROOTFS_CACHE") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/gpulab-rootfs")
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl RootFs {
    /// The cached root of `distro`, built on first use (a few minutes; several processes asking at once
    /// wait for one build). The root is minimal (`--variant=minbase`, plus `ca-certificates`), like a
    /// CUDA base image: no Python, no sshd; the workspace's setup installs those as it would in a pod.
    pub fn cached(distro: &Distro) -> io::Result<RootFs> {
        if let Some(why) = missing_tools() {
            return Err(io::Error::other(why));
        }
        let mirror = distro.mirror();
        let mut key = format!(
            "{BUILD_VERSION} {} {} {}",
            distro.family,
            distro.suite,
            mirror.as_deref().unwrap_or("default")
        );
        if distro.image_apt_sources().is_some() {
            // Roots built before the image's sources were written lack them (Debian's key is unchanged).
            key.push_str(" image-sources");
        }
        let dir = cache_dir().join(format!("{}-{:016x}", distro.suite, fnv(&key)));
        std::fs::create_dir_all(&dir)?;
        let root = dir.join("root");
        let done = dir.join("complete");
        let lock = std::fs::File::create(dir.join("lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        if done.exists() {
            return Ok(RootFs {
                distro: distro.clone(),
                path: root,
                built_in: None,
            });
        }
        let started = Instant::now();
        let partial = dir.join("partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        let mut cmd = std::process::Command::new("debootstrap");
        cmd.args(["--variant=minbase", "--include=ca-certificates"]);
        if distro.family == "ubuntu"
            && !Path::new("/usr/share/keyrings/ubuntu-archive-keyring.gpg").exists()
        {
            // Debian does not package Ubuntu's archive key. The packages are still checked against
            // the Release file's hashes; the root's own apt then checks signatures with the
            // ubuntu-keyring package debootstrap installed into it.
            cmd.arg("--no-check-gpg");
        }
        cmd.arg(distro.suite)
            .arg(&partial)
            .arg(mirror.unwrap_or_default());
        if let Some(script) = distro.script() {
            cmd.arg(script);
        }
        let log = dir.join("debootstrap.log");
        let out = std::fs::File::create(&log)?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(io::Error::other(format!(
                "debootstrap {} failed ({status}); the end of {}:\n{}",
                distro.suite,
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        if let Some((file, text)) = distro.image_apt_sources() {
            let _ = std::fs::remove_file(partial.join("etc/apt/sources.list"));
            std::fs::write(partial.join(file), text)?;
        }
        // apt's downloaded .debs are not part of the image.
        let _ = std::fs::remove_dir_all(partial.join("var/cache/apt/archives"));
        std::fs::create_dir_all(partial.join("var/cache/apt/archives/partial"))?;
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::rename(&partial, &root)?;
        std::fs::write(&done, format!("{key}\n"))?;
        Ok(RootFs {
            distro: distro.clone(),
            path: root,
            built_in: Some(started.elapsed()),
        })
    }

    /// Its size on disk, bytes.
    pub fn size_bytes(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return 0;
            };
            if meta.is_dir() {
                std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| walk(&e.path()))
                    .sum::<u64>()
                    + meta.len()
            } else {
                meta.len()
            }
        }
        walk(&self.path)
    }

    /// A fresh copy at `dest` (which must not exist): a container's throwaway root, with the host's CA
    /// bundle, pip settings and a resolver that answers inside the container's network.
    pub fn copy_to(&self, dest: &Path) -> io::Result<()> {
        let status = std::process::Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&self.path)
            .arg(dest)
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "copying {} to {} failed: {status}",
                self.path.display(),
                dest.display()
            )));
        }
        // slirp4netns's DNS forwarder.
        std::fs::write(dest.join("etc/resolv.conf"), "nameserver 10.0.2.3\n")?;
        host_registry_settings(dest)
    }
}

/// Hand the container what the host uses to reach the package registries: its CA bundle (a proxy's
/// authority may be in it) and pip's settings, minus local paths the container does not have.
fn host_registry_settings(root: &Path) -> io::Result<()> {
    let bundle = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .map(PathBuf::from)
    .chain(std::env::var_os("SSL_CERT_FILE").map(PathBuf::from))
    .find(|p| p.is_file());
    if let Some(bundle) = &bundle {
        // A local authority, so that update-ca-certificates in the container (ca-certificates'
        // postinst) keeps it in the bundle it regenerates.
        let local = root.join("usr/local/share/ca-certificates");
        std::fs::create_dir_all(&local)?;
        std::fs::copy(bundle, local.join("gpulab-host-bundle.crt"))?;
        let certs = root.join("etc/ssl/certs");
        std::fs::create_dir_all(&certs)?;
        let target = certs.join("ca-certificates.crt");
        let _ = std::fs::remove_file(&target);
        std::fs::copy(bundle, &target)?;
    }
    let mut conf = String::from("[global]\n");
    if bundle.is_some() {
        conf.push_str("cert = /etc/ssl/certs/ca-certificates.crt\n");
    }
    let host = pip_host_settings();
    for (key, value) in host {
        let _ = writeln!(conf, "{key} = {value}");
    }
    std::fs::write(root.join("etc/pip.conf"), conf)?;
    Ok(())
}

/// The host's pip index settings: `PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, `PIP_TRUSTED_HOST` and
/// their `/etc/pip.conf` / `~/.config/pip/pip.conf` keys (the environment wins).
fn pip_host_settings() -> Vec<(String, String)> {
    let keys = [
        "index-url",
        "extra-index-url",
        "trusted-host",
        "timeout",
        "default-timeout",
    ];
    let mut out: Vec<(String, String)> = Vec::new();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for file in [
        PathBuf::from("/etc/pip.conf"),
        home.join(".config/pip/pip.conf"),
        home.join(".pip/pip.conf"),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let k = k.trim();
                if keys.contains(&k) {
                    out.retain(|(key, _)| key != k);
                    out.push((k.to_string(), v.trim().to_string()));
                }
            }
        }
    }
    for k in keys {
        let var = format!("PIP_{}", k.to_ascii_uppercase().replace('-', "_"));
        if let Ok(v) = std::env::var(&var) {
            out.retain(|(key, _)| key != k);
            out.push((k.to_string(), v));
        }
    }
    out
}

/// The address slirp4netns gives the container (its `--configure` default).
const CONTAINER_ADDRESS: &str = "10.0.2.100";

/// /etc/hosts as the kubelet writes it into every container of a pod without host networking
/// (`managedHostsFileContent` in kubernetes/pkg/kubelet/kubelet_pods.go): the loopback names, and the
/// pod's address with its host name, which munged and Slurm resolve.
fn kubelet_hosts_file(hostname: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         {CONTAINER_ADDRESS}\t{hostname}\n"
    )
}

/// A folder bound into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host folder (or file).
    pub host: PathBuf,
    /// Where it appears in the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a container runs with: a pod's container, as the kubelet would start it.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The command and its arguments (`command` + `args`).
    pub argv: Vec<String>,
    /// The environment, in order (the image's, then the pod's).
    pub env: Vec<(String, String)>,
    /// The working directory (`/` when empty).
    pub working_dir: String,
    /// The host name (the pod's).
    pub hostname: String,
    /// Folders bound in: volumes, secrets, config maps.
    pub binds: Vec<Bind>,
    /// Paths that get a fresh tmpfs (`emptyDir` with `medium: Memory`).
    pub tmpfs: Vec<String>,
    /// Character devices to bind from the host, as (host, container) paths.
    pub devices: Vec<(String, String)>,
}

/// A running container: the bubblewrap sandbox, its network helper, and its output file.
#[derive(Debug)]
pub struct Container {
    bwrap: tokio::process::Child,
    slirp: Option<tokio::process::Child>,
    pid: u32,
    env: Vec<(String, String)>,
    working_dir: String,
    /// Its root's copy, removed when it is dropped.
    dir: PathBuf,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

impl Container {
    /// Start `spec` in a fresh copy of `rootfs` under `dir` (which must not exist): copies the root,
    /// starts bubblewrap with the network blocked until slirp4netns has configured it, then lets the
    /// command run. Output goes to `dir/output.log`.
    pub async fn start(rootfs: &RootFs, spec: &ContainerSpec, dir: &Path) -> io::Result<Container> {
        std::fs::create_dir_all(dir)?;
        let root = dir.join("root");
        let copy_from = rootfs.clone();
        let copy_to = root.clone();
        tokio::task::spawn_blocking(move || copy_from.copy_to(&copy_to))
            .await
            .map_err(io::Error::other)??;
        if !spec.hostname.is_empty() {
            std::fs::write(root.join("etc/hosts"), kubelet_hosts_file(&spec.hostname))?;
        }
        let info = dir.join("info.json");
        let block = dir.join("start.fifo");
        let status = std::process::Command::new("mkfifo").arg(&block).status()?;
        if !status.success() {
            return Err(io::Error::other("mkfifo failed"));
        }
        let log = dir.join("output.log");
        let mut args: Vec<String> = vec![
            "--bind".into(),
            root.display().to_string(),
            "/".into(),
            "--dev".into(),
            "/dev".into(),
            "--proc".into(),
            "/proc".into(),
            // Containers get a read-only sysfs (the OCI runtime spec's default mounts, as runc and
            // containerd set them up): hwloc, and with it slurmd, reads the CPU topology there.
            "--ro-bind".into(),
            "/sys".into(),
            "/sys".into(),
            "--unshare-pid".into(),
            // The command is the namespace's PID 1, as in a container: when it exits, the kernel ends
            // everything else in it, and a signal it has no handler for does not reach it.
            "--as-pid-1".into(),
            "--unshare-net".into(),
            "--unshare-ipc".into(),
            "--unshare-uts".into(),
            "--die-with-parent".into(),
            "--cap-add".into(),
            "ALL".into(),
            "--clearenv".into(),
        ];
        if !spec.hostname.is_empty() {
            args.extend(["--hostname".into(), spec.hostname.clone()]);
        }
        for path in &spec.tmpfs {
            args.extend(["--tmpfs".into(), path.clone()]);
        }
        for (host, container) in &spec.devices {
            args.extend(["--dev-bind".into(), host.clone(), container.clone()]);
        }
        for b in &spec.binds {
            let flag = if b.read_only { "--ro-bind" } else { "--bind" };
            args.extend([
                flag.into(),
                b.host.display().to_string(),
                b.container.clone(),
            ]);
        }
        for (k, v) in &spec.env {
            args.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        let working_dir = if spec.working_dir.is_empty() {
            "/".to_string()
        } else {
            spec.working_dir.clone()
        };
        args.extend(["--chdir".into(), working_dir.clone()]);
        args.extend([
            "--info-fd".into(),
            "3".into(),
            "--block-fd".into(),
            "4".into(),
        ]);
        args.push("--".into());
        args.extend(spec.argv.iter().cloned());
        let out = std::fs::File::create(&log)?;
        // The shell only opens the two descriptors bubblewrap reports on and waits on, then becomes it.
        let bwrap = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"info="$1"; block="$2"; shift 2; exec bwrap "$@" 3>"$info" 4<"$block""#)
            .arg("sh")
            .arg(&info)
            .arg(&block)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()?;
        // Opening the FIFO for writing waits until bubblewrap's shell opened it for reading.
        let block_path = block.clone();
        let writer = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().write(true).open(block_path)
        });
        let mut container = Container {
            bwrap,
            slirp: None,
            pid: 0,
            env: spec.env.clone(),
            working_dir,
            dir: dir.to_path_buf(),
            log,
        };
        let mut writer = match tokio::time::timeout(Duration::from_secs(30), writer).await {
            Ok(Ok(Ok(w))) => w,
            _ => {
                container.kill().await;
                return Err(io::Error::other(format!(
                    "bubblewrap did not start: {}",
                    std::fs::read_to_string(&container.log).unwrap_or_default()
                )));
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        container.pid = loop {
            let text = std::fs::read_to_string(&info).unwrap_or_default();
            if let Some(pid) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["child-pid"].as_u64())
            {
                break pid as u32;
            }
            if Instant::now() > deadline || container.bwrap.try_wait()?.is_some() {
                container.kill().await;
                return Err(io::Error::other(format!(
                    "bubblewrap failed: {}",
                    std::fs::read_to_string(&container.log).unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let slirp = tokio::process::Command::new("slirp4netns")
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(container.pid.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        container.slirp = Some(slirp);
        let route = format!("/proc/{}/net/route", container.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&route).is_ok_and(|r| r.contains("tap0")) {
            if Instant::now() > deadline {
                container.kill().await;
                return Err(io::Error::other(
                    "slirp4netns did not configure the container's network",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        use std::io::Write as _;
        writer.write_all(b"1")?;
        drop(writer);
        Ok(container)
    }

    /// The process ID (on the host) of the container's first process; its namespaces are the container's.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's environment and working directory, as exec'd commands get them.
    pub fn exec_env(&self) -> (&[(String, String)], &str) {
        (&self.env, &self.working_dir)
    }

    /// A command that runs `argv` in the container (all its namespaces and its root), with the
    /// container's environment plus `extra_env`, in its working directory: what the kubelet's exec does.
    pub fn exec_command(
        &self,
        argv: &[String],
        extra_env: &[(String, String)],
    ) -> tokio::process::Command {
        exec_in(self.pid, &self.env, &self.working_dir, argv, extra_env)
    }

    /// Connect to `port` on the container's loopback, from a thread that entered its network namespace.
    pub async fn connect(&self, port: u16) -> io::Result<tokio::net::TcpStream> {
        connect_in(self.pid, port).await
    }

    /// Whether its first process has exited; its exit code (or 128+signal) if so.
    pub fn exited(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        match self.bwrap.try_wait() {
            Ok(Some(status)) => Some(
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(1),
            ),
            Ok(None) => None,
            Err(_) => Some(1),
        }
    }

    /// Stop it as a container runtime does: SIGTERM to its command (PID 1 inside), then, if it is still
    /// running after `within`, [`Self::kill`].
    pub async fn terminate(&mut self, within: Duration) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + within;
        while self.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill().await;
    }

    /// Stop it: every process in it dies with its PID namespace.
    pub async fn kill(&mut self) {
        let _ = self.bwrap.kill().await;
        if let Some(mut slirp) = self.slirp.take() {
            let _ = slirp.kill().await;
        }
    }

    /// Stop it and remove its root's copy.
    pub async fn remove(mut self) {
        self.kill().await;
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

/// `argv` in the namespaces and root of the process `pid`, with `env` (then `extra_env`), in `dir`.
pub(crate) fn exec_in(
    pid: u32,
    env: &[(String, String)],
    dir: &str,
    argv: &[String],
    extra_env: &[(String, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("nsenter");
    // nsenter resolves `--wd=DIR` before it enters the mount namespace, so the container's shell
    // changes directory once inside.
    cmd.arg(format!("--target={pid}"))
        .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--root"])
        .args(["--", "/usr/bin/env", "-i"]);
    for (k, v) in env.iter().chain(extra_env) {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.args(["/bin/sh", "-c", r#"cd "$0" && exec "$@""#, dir])
        .args(argv);
    cmd
}

/// Connect to `port` on the loopback of the network namespace of process `pid`. A new thread enters the
/// namespace (never a pooled one, which would stay there), connects, and hands the socket back: a
/// socket keeps the namespace it was made in.
pub(crate) async fn connect_in(pid: u32, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| -> io::Result<std::net::TcpStream> {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            let stream = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })();
        let _ = tx.send(result);
    });
    let stream = rx.await.map_err(io::Error::other)??;
    tokio::net::TcpStream::from_std(stream)
}

/// Write `files` (name, bytes) into a new folder `dir` with `mode`, as the kubelet projects a secret or
/// config map.
pub fn project_files(dir: &Path, files: &[(String, Vec<u8>)], mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, data) in files {
        let path = dir.join(name);
        std::fs::write(&path, data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
