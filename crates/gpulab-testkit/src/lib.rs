//! Test support for gpulab: throwaway lab directories with their own config and SSH keys, checks
//! that run the real tools a user would (kubectl), and a Kubernetes API emulator ([`kube`]).

pub mod clouds;
pub mod eks_world;
pub mod fault_proxy;
pub mod load_balancers;
pub mod moto;
pub mod ready_lab;
pub mod rootfs;
pub mod sshd;
pub mod zones;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gpulab_core::spec::{SpecInputs, SpecLayer};

pub mod kube;

/// An OpenSSH ed25519 public key for tests (its private half is not kept anywhere).
pub const TEST_PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh0aGlzIGlzIGEgdGVzdCBrZXkgb2YgZ3B1bGFiIQ== gpulab-test";

/// A temporary directory standing in for a user's machine: a working directory, a home with
/// `~/.ssh`, and an environment that the test controls entirely.
pub struct LabDir {
    dir: tempfile::TempDir,
    /// Environment variables the lab's commands see (nothing else from the test process leaks in).
    pub env: BTreeMap<String, String>,
}

impl LabDir {
    /// An empty lab directory: no config file, no SSH key, no environment.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        std::fs::create_dir_all(dir.path().join("home/.ssh")).expect("create ~/.ssh");
        std::fs::create_dir_all(dir.path().join("work")).expect("create the working directory");
        LabDir {
            dir,
            env: BTreeMap::new(),
        }
    }

    /// The working directory, where `gpulab.toml` is looked for.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The home directory.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Write `gpulab.toml` in the working directory.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.work().join("gpulab.toml");
        std::fs::write(&path, toml).expect("write gpulab.toml");
        path
    }

    /// Put [`TEST_PUBLIC_KEY`] at `~/.ssh/id_ed25519.pub`.
    pub fn with_default_key(self) -> Self {
        std::fs::write(
            self.home().join(".ssh/id_ed25519.pub"),
            format!("{TEST_PUBLIC_KEY}\n"),
        )
        .expect("write key");
        self
    }

    /// Generate a real ed25519 key pair at `~/.ssh/id_ed25519` (with `ssh-keygen`), encrypted with
    /// `passphrase` if given, for tests that log in; returns its public key line as well.
    pub fn with_ssh_key(self, passphrase: Option<&str>) -> (Self, String) {
        let ssh_dir = self.home().join(".ssh");
        let key = sshd::generate_key(&ssh_dir, sshd::KeyKind::Ed25519, passphrase);
        std::fs::rename(&key.private, ssh_dir.join("id_ed25519")).expect("name the private key");
        std::fs::write(ssh_dir.join("id_ed25519.pub"), format!("{}\n", key.public))
            .expect("write the public key");
        (self, key.public)
    }

    /// Set an environment variable for the lab's commands.
    pub fn with_env(mut self, var: &str, value: &str) -> Self {
        self.env.insert(var.into(), value.into());
        self
    }

    /// The spec inputs this directory gives, with `overrides` on top.
    pub fn inputs(&self, overrides: SpecLayer) -> SpecInputs {
        SpecInputs {
            files: vec![self.work().join("gpulab.toml")],
            explicit_file: None,
            env: self.env.clone(),
            overrides,
            override_source: None,
            home: Some(self.home()),
        }
    }

    /// Where gpulab keeps this user's labs (`GPULAB_HOME` unset: the XDG data directory).
    pub fn gpulab_home(&self) -> PathBuf {
        self.home().join(".local/share/gpulab")
    }

    /// Record lab `spec` on this user's machine, with a new lab ID (returned), as `gpulab up` does
    /// before it creates anything: a test can then put objects labelled with the lab's ID in place
    /// before the real `gpulab up` runs and takes the lab on.
    pub fn record_lab(
        &self,
        spec: &gpulab_core::spec::LabSpec,
        provider: gpulab_core::Provider,
    ) -> gpulab_core::naming::LabId {
        let id = gpulab_core::naming::LabId::generate().expect("a lab ID");
        gpulab_core::state::LabDir::new(&self.gpulab_home(), &spec.name)
            .save(&gpulab_core::state::LabState::new(
                id.clone(),
                spec.clone(),
                provider,
            ))
            .expect("record the lab");
        id
    }

    /// A `gpulab` command run as a user in this directory: working directory, `HOME`, config directory and
    /// environment all set here, nothing inherited from the test's environment but `PATH`.
    pub fn command(&self, gpulab: &Path) -> Command {
        let mut cmd = Command::new(gpulab);
        cmd.current_dir(self.work())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .envs(&self.env);
        cmd
    }
}

impl Default for LabDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Where `kubectl` is, if installed.
pub fn kubectl() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
    })
}

/// Have the real `kubectl` decode a YAML stream offline (`kubectl label --local`), returning the
/// `kind/name` of every object it read. kubectl validates schemas only against a server; the offline
/// decode still rejects unknown kinds, bad apiVersions and malformed documents.
pub fn kubectl_decode(kubectl: &Path, yaml: &str) -> Result<Vec<String>, String> {
    let mut child = Command::new(kubectl)
        .args([
            "label",
            "--local",
            "-f",
            "-",
            "gpulab.io/check=ok",
            "-o",
            "name",
        ])
        .env("KUBECONFIG", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run kubectl: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A pseudo-terminal pair for driving a program as if from a terminal: the controller (the test's side)
/// and the terminal (the program's side), sized `cols` × `rows`.
pub fn pty_pair(cols: u16, rows: u16) -> (std::fs::File, std::fs::File) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let controller =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("open a pseudo-terminal");
    grantpt(&controller).expect("grantpt");
    unlockpt(&controller).expect("unlockpt");
    let name = ptsname(&controller, Vec::new()).expect("ptsname");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("a UTF-8 terminal name"))
        .expect("open the terminal side");
    let size = rustix::termios::Winsize {
        ws_col: cols,
        ws_row: rows,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&terminal, size).expect("size the terminal");
    (controller.into(), terminal)
}

/// `len` bytes of deterministic noise from `seed` (xorshift64): content that no compression or
/// deduplication can shortcut, different for each seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    let mut state = NoiseState::new(seed);
    while bytes.len() < len {
        bytes.extend_from_slice(&state.next().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Write `len` bytes of [`noise`] from `seed` to `path`, 8 MiB at a time (for files of gigabytes).
pub fn write_noise(path: &Path, len: u64, seed: u64) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut file = std::io::BufWriter::with_capacity(8 << 20, file);
    let mut state = NoiseState::new(seed);
    let mut block = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&state.next().to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("write noise");
        left -= n as u64;
    }
    file.flush().expect("write noise");
}

/// Whether the files at `a` and `b` hold the same bytes, compared 4 MiB at a time (for files of
/// gigabytes, where reading both whole would not do).
pub fn same_contents(a: &Path, b: &Path) -> bool {
    fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        while filled < buf.len() {
            match std::io::Read::read(file, &mut buf[filled..]).expect("read") {
                0 => break,
                n => filled += n,
            }
        }
        filled
    }
    let open =
        |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

struct NoiseState(u64);

impl NoiseState {
    fn new(seed: u64) -> Self {
        // xorshift must not start at zero; mixing the seed keeps nearby seeds apart.
        NoiseState(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Set `path`'s modification and access times to `secs` after the epoch (tests that copy or sync by
/// modification time).
pub fn set_mtime(path: &Path, secs: u64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let times = std::fs::FileTimes::new()
        .set_modified(time)
        .set_accessed(time);
    std::fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| panic!("set the times of {}: {e}", path.display()));
}

/// The first `program` on PATH, then in `/usr/sbin` and `/sbin` (where sshd and debootstrap live, and
/// which a user's PATH often lacks).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A command's standard output, as text.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An echo server on loopback: every connection gets back what it sends, until it closes its side.
/// Returns its address.
pub async fn echo_server() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let addr = listener.local_addr().expect("the echo server's address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}
