//! A real OpenSSH `sshd` on a loopback port, for tests of gpulab's SSH client: generated host keys (ed25519,
//! RSA, ECDSA), user keys made with `ssh-keygen` (with or without a passphrase), an authorized_keys file in
//! a temporary directory, and limits raised so tests may open many channels and connections. It runs as the
//! current user in the foreground (`sshd -D -e`) and is killed when dropped.
//!
//! It needs the Debian package `openssh-server` (and `openssh-client` for `ssh-keygen`); without them the
//! harness panics saying so.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A key algorithm `ssh-keygen` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ed25519.
    Ed25519,
    /// RSA, 2048 bits (quick to generate).
    Rsa,
    /// ECDSA on P-256.
    Ecdsa,
}

impl KeyKind {
    /// Every kind.
    pub const ALL: [KeyKind; 3] = [KeyKind::Ed25519, KeyKind::Rsa, KeyKind::Ecdsa];

    /// The name `ssh-keygen -t` takes.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Rsa => "rsa",
            KeyKind::Ecdsa => "ecdsa",
        }
    }

    fn bits(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "256",
            KeyKind::Rsa => "2048",
            KeyKind::Ecdsa => "256",
        }
    }
}

/// A key pair made by `ssh-keygen`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Its algorithm.
    pub kind: KeyKind,
    /// The private key file (OpenSSH format).
    pub private: PathBuf,
    /// The public key, one line in OpenSSH format.
    pub public: String,
    /// The passphrase it is encrypted with, if any.
    pub passphrase: Option<String>,
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

const INSTALL: &str =
    "install it: `apt-get install -y openssh-server openssh-client` (CI installs it)";

/// Where `sshd` is, if installed.
pub fn sshd_path() -> Option<PathBuf> {
    find_program("sshd", &["/usr/sbin", "/usr/local/sbin", "/sbin"])
}

/// Generate a key pair in `dir` with `ssh-keygen`, named after its kind and a counter.
pub fn generate_key(dir: &Path, kind: KeyKind, passphrase: Option<&str>) -> KeyPair {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let keygen = find_program("ssh-keygen", &["/usr/bin"])
        .unwrap_or_else(|| panic!("ssh-keygen is not installed; {INSTALL}"));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let private = dir.join(format!("id_{}_{n}", kind.name()));
    let status = Command::new(keygen)
        .args(["-q", "-t", kind.name(), "-b", kind.bits(), "-C"])
        .arg(format!("gpulab-test-{}-{n}", kind.name()))
        .arg("-N")
        .arg(passphrase.unwrap_or(""))
        .arg("-f")
        .arg(&private)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen -t {} failed", kind.name());
    let mut public_path = private.clone().into_os_string();
    public_path.push(".pub");
    let public = std::fs::read_to_string(public_path).expect("read the public key");
    KeyPair {
        kind,
        private,
        public: public.trim().to_string(),
        passphrase: passphrase.map(str::to_owned),
    }
}

/// The name of the user the tests run as (sshd logs in as this user).
pub fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("run `id -un`");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running sshd. Dropping it kills the server.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    host_keys: Vec<KeyPair>,
}

/// Settings for [`Sshd::start_with`].
#[derive(Debug, Clone)]
pub struct SshdConfig {
    /// `MaxSessions`: session channels per connection.
    pub max_sessions: u32,
    /// Lines appended to the generated sshd_config.
    pub extra: Vec<String>,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            max_sessions: 200,
            extra: Vec::new(),
        }
    }
}

impl SshdConfig {
    /// Also admit `user`, a user other than the one running the server, with the public keys in
    /// `authorized_keys`. sshd reads that file as `user`, who cannot read the server's private directory, so
    /// put it somewhere `user` can read. Only an sshd running as root can log in as another user, and with PAM
    /// off it refuses an account whose password is locked (`!` in /etc/shadow). Appends a `Match User` block
    /// to [`extra`](Self::extra), closed with `Match all`.
    pub fn admit_user(mut self, user: &str, authorized_keys: &Path) -> Self {
        self.extra.push(format!("Match User {user}"));
        self.extra.push(format!(
            "    AuthorizedKeysFile {}",
            authorized_keys.display()
        ));
        self.extra.push("Match all".into());
        self
    }
}

impl Sshd {
    /// Start sshd with the default settings (MaxSessions 200, MaxStartups 200).
    pub fn start() -> Sshd {
        Self::start_with(SshdConfig::default())
    }

    /// Start sshd with `config`. Panics, saying what to install, when OpenSSH is missing.
    pub fn start_with(config: SshdConfig) -> Sshd {
        let sshd = sshd_path().unwrap_or_else(|| panic!("sshd is not installed; {INSTALL}"));
        // sshd insists on its privilege separation directory even when it runs unprivileged.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("gpulab-sshd-")
            .tempdir()
            .expect("create sshd's directory");
        let host_keys: Vec<KeyPair> = KeyKind::ALL
            .iter()
            .map(|k| generate_key(dir.path(), *k, None))
            .collect();
        std::fs::write(dir.path().join("authorized_keys"), "").expect("write authorized_keys");
        let user = current_user();

        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config_path = dir.path().join("sshd_config");
            std::fs::write(
                &config_path,
                sshd_config(dir.path(), port, &host_keys, &config),
            )
            .expect("write sshd_config");
            let log = dir.path().join("sshd.log");
            let log_file = std::fs::File::create(&log).expect("create sshd.log");
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", sshd.display()));
            match wait_ready(&mut child, &log) {
                Ok(()) => {
                    return Sshd {
                        child,
                        dir,
                        port,
                        user,
                        host_keys,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!(
                        "{why}\n--- sshd log ---\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("sshd did not start: {last_error}");
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The user to log in as (the one running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its temporary directory, which tests may use for files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its host key of `kind`.
    pub fn host_key(&self, kind: KeyKind) -> &KeyPair {
        self.host_keys
            .iter()
            .find(|k| k.kind == kind)
            .expect("a host key of every kind")
    }

    /// Generate a user key and authorize it.
    pub fn user_key(&self, kind: KeyKind, passphrase: Option<&str>) -> KeyPair {
        let keys = self.dir.path().join("user-keys");
        std::fs::create_dir_all(&keys).expect("create the user key directory");
        let key = generate_key(&keys, kind, passphrase);
        self.authorize(&key.public);
        key
    }

    /// Add a public key to the authorized keys.
    pub fn authorize(&self, public_key: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(file, "{}", public_key.trim()).expect("append to authorized_keys");
    }

    /// What sshd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn sshd_config(dir: &Path, port: u16, host_keys: &[KeyPair], config: &SshdConfig) -> String {
    let mut lines = vec![
        format!("ListenAddress 127.0.0.1:{port}"),
        "PidFile none".into(),
        "StrictModes no".into(),
        "UsePAM no".into(),
        "PermitRootLogin yes".into(),
        "PubkeyAuthentication yes".into(),
        "PasswordAuthentication no".into(),
        "KbdInteractiveAuthentication no".into(),
        format!(
            "AuthorizedKeysFile {}",
            dir.join("authorized_keys").display()
        ),
        format!("MaxSessions {}", config.max_sessions),
        "MaxStartups 200".into(),
        "MaxAuthTries 20".into(),
        "AllowTcpForwarding yes".into(),
        "UseDNS no".into(),
        "PrintMotd no".into(),
        "Subsystem sftp internal-sftp".into(),
        "LogLevel INFO".into(),
    ];
    lines.extend(
        host_keys
            .iter()
            .map(|k| format!("HostKey {}", k.private.display())),
    );
    lines.extend(config.extra.iter().cloned());
    lines.join("\n") + "\n"
}

/// Wait until sshd logs that it listens, or say why it did not. (Its log, not a probe of the port: another
/// test's server could have taken the port in between.)
fn wait_ready(child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited with {status}"));
        }
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains("Server listening on")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("sshd did not start listening within 15 s".into())
}

impl Sshd {
    /// Make this sshd the workspace sshd of lab `id` of `spec` in `kube`, before `up`: the lab's namespace
    /// and host-key secret are created, labelled as the lab labels its own, the secret holding this
    /// sshd's ed25519 host key (the workspace keeps the key it finds there, so `up` records and pins this
    /// one), and a port-forward to the pod's port 22 reaches this sshd.
    pub async fn stand_in_for_workspace(
        &self,
        kube: &crate::kube::KubeEmulator,
        spec: &gpulab_core::spec::LabSpec,
        id: &gpulab_core::naming::LabId,
    ) {
        let names = gpulab_core::naming::KubeNames::new(spec);
        use k8s_openapi::api::core::v1::{Namespace, Secret};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use kube::Api;
        use kube::api::PostParams;

        let client = kube.client();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(names.namespace.clone()),
                labels: Some(gpulab_core::naming::kube_labels(spec, id)),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the lab's namespace");
        let host_key = self.host_key(KeyKind::Ed25519);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(names.host_key.clone()),
                labels: Some(gpulab_core::naming::kube_labels(spec, id)),
                ..Default::default()
            },
            string_data: Some(
                [
                    (
                        "ssh_host_ed25519_key".to_string(),
                        std::fs::read_to_string(&host_key.private).expect("read the host key"),
                    ),
                    (
                        "ssh_host_ed25519_key.pub".to_string(),
                        host_key.public.clone(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client, &names.namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the lab's host-key secret");
        kube.register_port(&names.namespace, &names.pod, 22, self.addr());
    }
}
