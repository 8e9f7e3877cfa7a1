//! Plain `ssh`, `scp`, `rsync` and VS Code Remote-SSH into a lab: `gpulab ssh-config` writes a Host block,
//! `gpulab-<lab>`, whose `ProxyCommand` is `gpulab proxy --name <lab>`: [`proxy_stdio`], a bridge from
//! standard input and output to the workspace's sshd through the API server's port-forward, so no port is
//! public.
//!
//! Layout: one file per lab, `~/.ssh/gpulab/<lab>`, and one line at the top of `~/.ssh/config`,
//! `Include ~/.ssh/gpulab/*`. (An `Include` after a `Host` line would only apply inside that block, so it
//! goes first.) The host key gpulab pinned for the pod goes in the lab's own known_hosts file under the
//! alias, and the block checks it strictly: the user's `~/.ssh/known_hosts` is never touched.
//!
//! ```text
//! Host gpulab-dev
//!     HostName dev
//!     User root
//!     ProxyCommand /usr/local/bin/gpulab proxy --name dev
//!     HostKeyAlias gpulab-dev
//!     UserKnownHostsFile /home/me/.local/state/gpulab/dev/known_hosts
//!     StrictHostKeyChecking yes
//!     IdentityFile /home/me/.ssh/id_ed25519
//!     IdentitiesOnly yes
//!     ServerAliveInterval 30
//! ```

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Tunnel;
use super::shell_quote;
use crate::private_files::{create_private_dir, write_private_atomically};
use crate::{Error, Result};

/// What the Host block for one lab says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfigEntry {
    /// The lab's name; the Host alias is `gpulab-<lab>`.
    pub lab: String,
    /// The user to log in as.
    pub user: String,
    /// The ProxyCommand's program and arguments, quoted for the shell when rendered.
    pub proxy_command: Vec<String>,
    /// The private key to log in with.
    pub identity_file: Option<PathBuf>,
    /// The lab's own known_hosts file, which holds [`SshConfigEntry::host_key`].
    pub known_hosts: PathBuf,
    /// The pod's host key, one OpenSSH public key line (`ssh-ed25519 AAAA…`), which ssh then requires.
    pub host_key: Option<String>,
    /// Without a host key: let ssh trust the first key it sees (`StrictHostKeyChecking accept-new`)
    /// and record it. Off unless the user asks, since that first key could be anyone's; without it (and
    /// without a host key) [`SshConfigEntry::render`] refuses.
    pub accept_new_host_key: bool,
}

impl SshConfigEntry {
    /// The entry for `lab`, logging in as root through `<gpulab> proxy --name <lab>`.
    pub fn new(lab: impl Into<String>, gpulab: &Path, known_hosts: impl Into<PathBuf>) -> Self {
        let lab = lab.into();
        SshConfigEntry {
            proxy_command: vec![
                gpulab.display().to_string(),
                "proxy".into(),
                "--name".into(),
                lab.clone(),
            ],
            lab,
            user: "root".into(),
            identity_file: None,
            known_hosts: known_hosts.into(),
            host_key: None,
            accept_new_host_key: false,
        }
    }

    /// The Host alias, `gpulab-<lab>`: what `ssh`, `scp` and VS Code are given.
    pub fn alias(&self) -> String {
        host_alias(&self.lab)
    }

    /// The Host block; an error when there is no host key to pin and trusting the first one was not
    /// asked for.
    pub fn render(&self) -> Result<String> {
        check_lab_name(&self.lab)?;
        if self.host_key.is_none() && !self.accept_new_host_key {
            return Err(Error::Remote {
                message: format!(
                    "the workspace's SSH host key of lab {} is not recorded, so ssh could not tell the workspace from an impostor",
                    self.lab
                ),
                hint: Some(
                    "run `gpulab up` (it records the key), or pass --accept-new-host-key to trust the first key ssh is shown".into(),
                ),
            });
        }
        let paths = [Some(&self.known_hosts), self.identity_file.as_ref()];
        let texts = paths
            .into_iter()
            .flatten()
            .map(|p| p.to_string_lossy().into_owned())
            .chain(self.proxy_command.iter().cloned())
            .chain([self.user.clone()]);
        for text in texts {
            if text.contains(['\n', '\r', '"']) {
                return Err(Error::Remote {
                    message: format!("ssh-config: {text:?} cannot go in an ssh config file"),
                    hint: Some("ssh_config values cannot hold line breaks or double quotes".into()),
                });
            }
        }
        let alias = self.alias();
        let proxy = self
            .proxy_command
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        let mut lines = vec![
            format!(
                "# Managed by gpulab for the lab {:?}: `gpulab ssh-config` rewrites this file.",
                self.lab
            ),
            format!("Host {alias}"),
            format!("    HostName {}", self.lab),
            format!("    User {}", config_value(&self.user)),
            // ssh runs the command with `sh -c` after expanding %-tokens, so `%` is doubled.
            format!("    ProxyCommand {}", proxy.replace('%', "%%")),
            format!("    HostKeyAlias {alias}"),
            format!("    UserKnownHostsFile {}", config_path(&self.known_hosts)),
        ];
        lines.push(
            if self.host_key.is_some() {
                "    StrictHostKeyChecking yes"
            } else {
                "    StrictHostKeyChecking accept-new"
            }
            .into(),
        );
        if let Some(key) = &self.identity_file {
            lines.push(format!("    IdentityFile {}", config_path(key)));
            lines.push("    IdentitiesOnly yes".into());
        }
        lines.push("    ServerAliveInterval 30".into());
        Ok(lines.join("\n") + "\n")
    }

    /// The known_hosts line for the pinned host key, under the alias: `gpulab-<lab> ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> Option<String> {
        let key = self.host_key.as_deref()?;
        let mut fields = key.split_whitespace();
        let (kind, blob) = (fields.next()?, fields.next()?);
        Some(format!("{} {kind} {blob}\n", self.alias()))
    }
}

/// The Host alias of `lab`: `gpulab-<lab>`.
pub fn host_alias(lab: &str) -> String {
    format!("gpulab-{lab}")
}

fn check_lab_name(lab: &str) -> Result<()> {
    if lab.is_empty()
        || !lab
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Error::Remote {
            message: format!("ssh-config: {lab:?} cannot be a Host alias"),
            hint: Some("lab names are letters, digits, `-`, `_` and `.`".into()),
        });
    }
    Ok(())
}

fn config_value(value: &str) -> String {
    if value.contains(char::is_whitespace) || value.contains('#') || value.is_empty() {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

/// A path as ssh_config takes it: `%` doubled (these keywords expand %-tokens), quoted when it has spaces.
fn config_path(path: &Path) -> String {
    config_value(&path.display().to_string().replace('%', "%%"))
}

/// Where the files went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledSshConfig {
    /// The Host alias to give ssh, scp, rsync and VS Code: `gpulab-<lab>`.
    pub alias: String,
    /// The lab's Host block, `<ssh dir>/gpulab/<lab>`.
    pub host_file: PathBuf,
    /// The known_hosts file written with the pinned key, if there was one.
    pub known_hosts: Option<PathBuf>,
    /// The main config file that includes it.
    pub main_config: PathBuf,
    /// True when the `Include` line was added or moved to the top this time.
    pub include_changed: bool,
}

/// The user's `~/.ssh`.
pub fn default_ssh_dir() -> Option<PathBuf> {
    dirs::home_dir().map(|h| h.join(".ssh"))
}

/// The `Include` pattern for the labs' files in `ssh_dir`: `~/.ssh/gpulab/*` for the user's own `~/.ssh`,
/// an absolute path otherwise.
pub fn include_pattern(ssh_dir: &Path) -> String {
    if default_ssh_dir().is_some_and(|d| d == ssh_dir) {
        "~/.ssh/gpulab/*".into()
    } else {
        config_path(&ssh_dir.join("gpulab").join("*"))
    }
}

/// Write the lab's Host block to `<ssh_dir>/gpulab/<lab>`, its pinned host key to its known_hosts file,
/// and make sure `<ssh_dir>/config` includes the block (at its top). Idempotent; every file is replaced
/// atomically with mode 0600, and the user's own lines in `config` are kept as they were.
pub fn install(entry: &SshConfigEntry, ssh_dir: &Path) -> Result<InstalledSshConfig> {
    let block = entry.render()?;
    let gpulab_dir = ssh_dir.join("gpulab");
    create_private_dir(ssh_dir)?;
    create_private_dir(&gpulab_dir)?;
    let host_file = gpulab_dir.join(&entry.lab);
    write_private_atomically(&host_file, block.as_bytes())?;
    let known_hosts = match entry.known_hosts_line() {
        Some(line) => {
            if let Some(parent) = entry.known_hosts.parent() {
                create_private_dir(parent)?;
            }
            write_private_atomically(&entry.known_hosts, line.as_bytes())?;
            Some(entry.known_hosts.clone())
        }
        None => None,
    };
    let main_config = ssh_dir.join("config");
    let include_changed = ensure_include(&main_config, &include_pattern(ssh_dir))?;
    Ok(InstalledSshConfig {
        alias: entry.alias(),
        host_file,
        known_hosts,
        main_config,
        include_changed,
    })
}

/// Remove the lab's Host block (for `gpulab down`). True when there was one. The `Include` line stays: it
/// matches nothing once no lab is left.
pub fn remove(lab: &str, ssh_dir: &Path) -> Result<bool> {
    check_lab_name(lab)?;
    let path = ssh_dir.join("gpulab").join(lab);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

const INCLUDE_COMMENT: &str = "# Added by gpulab (`gpulab ssh-config`): its labs' Host blocks. Keep it above any Host or Match line.";

fn keyword_of(line: &str) -> Option<(String, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    Some((line[..end].to_ascii_lowercase(), rest.trim()))
}

/// Make sure the ssh config at `config` has `Include <pattern>` before its first `Host` or `Match` line,
/// adding it at the top (or moving it there) when not. True when the file changed. The file is replaced
/// atomically with mode 0600 (through a symlink, the link's target is); the rest of its lines are kept
/// byte for byte.
pub fn ensure_include(config: &Path, pattern: &str) -> Result<bool> {
    let target = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let text = match std::fs::read_to_string(&target) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("read {}", target.display()), e)),
    };
    let ours = |line: &str| keyword_of(line).is_some_and(|(k, v)| k == "include" && v == pattern);
    let mut in_preamble = true;
    let mut at_top = false;
    let mut kept = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some((keyword, _)) = keyword_of(line)
            && (keyword == "host" || keyword == "match")
        {
            in_preamble = false;
        }
        if ours(line) {
            if in_preamble {
                at_top = true;
            } else {
                // Inside a Host block it would apply to that host only: drop it, it goes to the top.
                continue;
            }
        } else if line.trim_end() == INCLUDE_COMMENT && !in_preamble {
            continue;
        }
        kept.push(line);
    }
    if at_top {
        return Ok(false);
    }
    let mut new = format!("{INCLUDE_COMMENT}\nInclude {pattern}\n");
    if !kept.is_empty() {
        new.push('\n');
    }
    new.extend(kept);
    if let Some(parent) = target.parent() {
        create_private_dir(parent)?;
    }
    write_private_atomically(&target, new.as_bytes())?;
    Ok(true)
}

/// The stdio bridge `gpulab proxy` runs as ssh's ProxyCommand: bytes from `stdin` go into `tunnel` (the
/// workspace's sshd, usually through the API server's port-forward) and the tunnel's bytes go to
/// `stdout`. Standard input's end is passed on as the tunnel's write shutdown; returns when the remote side
/// closes. The caller should exit the process then: a blocking read of the real standard input cannot be
/// cancelled. Both directions move up to [`BRIDGE_CHUNK`] bytes at a time.
pub async fn proxy_stdio(
    tunnel: Box<dyn Tunnel>,
    stdin: impl AsyncRead + Unpin,
    mut stdout: impl AsyncWrite + Unpin,
) -> Result<()> {
    let (from_remote, mut to_remote) = tokio::io::split(tunnel);
    let mut stdin = tokio::io::BufReader::with_capacity(BRIDGE_CHUNK, stdin);
    let mut from_remote = tokio::io::BufReader::with_capacity(BRIDGE_CHUNK, from_remote);
    let up = async {
        let copied = tokio::io::copy_buf(&mut stdin, &mut to_remote).await;
        let _ = to_remote.shutdown().await;
        copied
    };
    let down = async {
        tokio::io::copy_buf(&mut from_remote, &mut stdout).await?;
        stdout.flush().await
    };
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            copied = &mut up, if !up_done => {
                up_done = true;
                // The workspace side stopped taking bytes; its end of the stream says why.
                let _ = copied;
            }
            done = &mut down => {
                return done.map_err(|e| Error::io("proxy: pass the workspace's bytes to standard output", e));
            }
        }
    }
}

/// The most bytes the proxy moves in one read or write.
pub const BRIDGE_CHUNK: usize = 256 * 1024;

/// The size the proxy asks for its standard input and output pipes.
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 1 << 20;

/// [`proxy_stdio`] on this process's standard input and output. When they are pipes (as ssh gives its
/// ProxyCommand) they are read and written without blocking, straight from the event loop; otherwise
/// (a terminal, a file) through tokio's blocking standard streams.
pub async fn proxy_process_stdio(tunnel: Box<dyn Tunnel>) -> Result<()> {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok());
    let output = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Sender::from_owned_fd(fd).ok());
    // ssh's pipes hold 64 KiB; a bigger pipe lets the proxy hand over a whole message at once instead
    // of waking ssh and waiting per 64 KiB. Unprivileged processes may grow a pipe to 1 MiB
    // (/proc/sys/fs/pipe-max-size); where they may not, the pipe stays as it is.
    #[cfg(target_os = "linux")]
    for fd in [std::io::stdin().as_fd(), std::io::stdout().as_fd()] {
        let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_SIZE);
    }
    match (input, output) {
        (Some(input), Some(output)) => proxy_stdio(tunnel, input, output).await,
        (Some(input), None) => proxy_stdio(tunnel, input, tokio::io::stdout()).await,
        (None, Some(output)) => proxy_stdio(tunnel, tokio::io::stdin(), output).await,
        (None, None) => proxy_stdio(tunnel, tokio::io::stdin(), tokio::io::stdout()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry() -> SshConfigEntry {
        let mut entry = SshConfigEntry::new(
            "dev",
            Path::new("/usr/local/bin/gpulab"),
            "/home/me/.local/state/gpulab/dev/known_hosts",
        );
        entry.identity_file = Some("/home/me/.ssh/id_ed25519".into());
        entry.host_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEN7 root@dev".into());
        entry
    }

    #[test]
    fn the_host_block_pins_the_key_and_proxies_through_gpulab() {
        let block = entry().render().unwrap();
        let expected = "\
# Managed by gpulab for the lab \"dev\": `gpulab ssh-config` rewrites this file.
Host gpulab-dev
    HostName dev
    User root
    ProxyCommand /usr/local/bin/gpulab proxy --name dev
    HostKeyAlias gpulab-dev
    UserKnownHostsFile /home/me/.local/state/gpulab/dev/known_hosts
    StrictHostKeyChecking yes
    IdentityFile /home/me/.ssh/id_ed25519
    IdentitiesOnly yes
    ServerAliveInterval 30
";
        assert_eq!(block, expected);
        assert_eq!(
            entry().known_hosts_line().unwrap(),
            "gpulab-dev ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEN7\n"
        );
    }

    #[test]
    fn odd_paths_are_quoted_and_percent_escaped() {
        let mut e = entry();
        e.proxy_command[0] = "/opt/my tools/gpulab".into();
        e.identity_file = Some("/home/me/100%/key".into());
        e.known_hosts = "/home/a b/known_hosts".into();
        e.host_key = None;
        // No recorded key: refused, unless trusting the first key was asked for.
        let refused = e.render().unwrap_err().to_string();
        assert!(refused.contains("--accept-new-host-key"), "{refused}");
        e.accept_new_host_key = true;
        let block = e.render().unwrap();
        assert!(block.contains("ProxyCommand '/opt/my tools/gpulab' proxy --name dev\n"));
        assert!(block.contains("IdentityFile /home/me/100%%/key\n"));
        assert!(block.contains("UserKnownHostsFile \"/home/a b/known_hosts\"\n"));
        assert!(block.contains("StrictHostKeyChecking accept-new\n"));
        e.lab = "x y".into();
        assert!(e.render().is_err());
        let mut e = entry();
        e.proxy_command.push("two\nlines".into());
        assert!(e.render().is_err());
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn include_goes_first_once_and_keeps_the_users_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let user = "Host work\n  HostName work.example.com\n  User me\n\nHost *\n  ServerAliveInterval 60\n";
        std::fs::write(&config, user).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

        assert!(ensure_include(&config, "~/.ssh/gpulab/*").unwrap());
        let text = std::fs::read_to_string(&config).unwrap();
        assert_eq!(
            text,
            format!("{INCLUDE_COMMENT}\nInclude ~/.ssh/gpulab/*\n\n{user}")
        );
        assert_eq!(mode(&config), 0o600);

        assert!(!ensure_include(&config, "~/.ssh/gpulab/*").unwrap());
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

        // One that a user (or an older tool) put inside a Host block moves to the top.
        let misplaced = "Host a\n  User x\nInclude ~/.ssh/gpulab/*\n";
        std::fs::write(&config, misplaced).unwrap();
        assert!(ensure_include(&config, "~/.ssh/gpulab/*").unwrap());
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            format!("{INCLUDE_COMMENT}\nInclude ~/.ssh/gpulab/*\n\nHost a\n  User x\n")
        );

        // A missing file is created; a user's own Include above the Host lines counts.
        let fresh = dir.path().join("sub/config");
        assert!(ensure_include(&fresh, "/x/*").unwrap());
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            format!("{INCLUDE_COMMENT}\nInclude /x/*\n")
        );
        std::fs::write(&fresh, "# mine\ninclude=/x/*\nHost b\n").unwrap();
        assert!(!ensure_include(&fresh, "/x/*").unwrap());
    }

    #[test]
    fn a_symlinked_config_is_updated_through_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-ssh-config");
        std::fs::write(&real, "Host x\n").unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(ensure_include(&link, "/p/*").unwrap());
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(
            std::fs::read_to_string(&real)
                .unwrap()
                .ends_with("Include /p/*\n\nHost x\n")
        );
    }

    #[test]
    fn install_writes_the_block_and_the_pinned_key_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let ssh_dir = dir.path().join(".ssh");
        let mut e = entry();
        e.known_hosts = dir.path().join("state/dev/known_hosts");
        let first = install(&e, &ssh_dir).unwrap();
        assert!(first.include_changed);
        assert_eq!(first.host_file, ssh_dir.join("gpulab/dev"));
        assert_eq!(
            std::fs::read_to_string(&first.host_file).unwrap(),
            e.render().unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(&e.known_hosts).unwrap(),
            e.known_hosts_line().unwrap()
        );
        for path in [&first.host_file, &e.known_hosts, &first.main_config] {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        assert_eq!(mode(&ssh_dir), 0o700);
        let config = std::fs::read_to_string(&first.main_config).unwrap();
        let again = install(&e, &ssh_dir).unwrap();
        assert!(!again.include_changed);
        assert_eq!(std::fs::read_to_string(&again.main_config).unwrap(), config);
        assert!(config.contains(&format!("Include {}/gpulab/*\n", ssh_dir.display())));

        assert!(remove("dev", &ssh_dir).unwrap());
        assert!(!remove("dev", &ssh_dir).unwrap());
    }
}
