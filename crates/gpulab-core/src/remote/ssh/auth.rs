//! User authentication: the user's private key (ed25519, RSA with SHA-2 signatures, ECDSA; OpenSSH or PEM
//! format), decrypted with a passphrase the caller supplies, or signed by ssh-agent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use super::host_key::{ClientHandler, fingerprint};
use crate::{Error, Result};

/// Asks for the passphrase of an encrypted key (the key's path is the argument); `None` gives up. It may
/// block, e.g. on a terminal prompt: gpulab calls it on a blocking thread.
pub type PassphraseFn = Arc<dyn Fn(&Path) -> Option<String> + Send + Sync>;

/// How many times a wrong passphrase is asked again, as OpenSSH does.
const PASSPHRASE_TRIES: usize = 3;

/// How the client proves who it is.
///
/// With a `key`: an unencrypted key is used directly; an encrypted one is signed by the agent when the
/// agent holds it, and otherwise decrypted with a passphrase from `passphrase`. Without a `key`, every
/// identity the agent holds is tried in turn.
#[derive(Clone, Default)]
pub struct SshAuth {
    /// The private key file.
    pub key: Option<PathBuf>,
    /// Asked for the key's passphrase when the key is encrypted and the agent cannot sign with it.
    pub passphrase: Option<PassphraseFn>,
    /// The ssh-agent socket (`SSH_AUTH_SOCK`), if the agent may be used.
    pub agent: Option<PathBuf>,
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshAuth")
            .field("key", &self.key)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<callback>"),
            )
            .field("agent", &self.agent)
            .finish()
    }
}

impl SshAuth {
    /// Authenticate with the private key at `path`.
    pub fn key(path: impl Into<PathBuf>) -> Self {
        SshAuth {
            key: Some(path.into()),
            ..Default::default()
        }
    }

    /// Only the agent listening on `socket`.
    pub fn agent(socket: impl Into<PathBuf>) -> Self {
        SshAuth {
            agent: Some(socket.into()),
            ..Default::default()
        }
    }

    /// Ask `ask` for the passphrase of an encrypted key.
    pub fn with_passphrase(
        mut self,
        ask: impl Fn(&Path) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.passphrase = Some(Arc::new(ask));
        self
    }

    /// Also use the agent listening on `socket`.
    pub fn with_agent(mut self, socket: impl Into<PathBuf>) -> Self {
        self.agent = Some(socket.into());
        self
    }

    /// Also use the agent named by `SSH_AUTH_SOCK`, when it is set.
    pub fn with_agent_from_env(mut self) -> Self {
        if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
            self.agent = Some(PathBuf::from(sock));
        }
        self
    }
}

fn remote_err(message: String, hint: impl Into<Option<String>>) -> Error {
    Error::Remote {
        message,
        hint: hint.into(),
    }
}

/// A key file as read from disk: usable at once, or encrypted (with its public half, which OpenSSH keeps
/// in clear).
enum KeyFile {
    Plain(Box<PrivateKey>),
    Encrypted {
        text: String,
        public: Option<PublicKey>,
    },
}

fn read_key(path: &Path) -> Result<KeyFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read SSH key {}", path.display()), e))?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(KeyFile::Plain(Box::new(key))),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let public = PrivateKey::from_openssh(&text)
                .map(|k| k.public_key().clone())
                .ok()
                .or_else(|| {
                    let mut pub_path = path.as_os_str().to_owned();
                    pub_path.push(".pub");
                    russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
                });
            Ok(KeyFile::Encrypted { text, public })
        }
        Err(e) => Err(remote_err(
            format!("cannot read SSH private key {}: {e}", path.display()),
            "gpulab reads ed25519, RSA and ECDSA keys in OpenSSH or PEM format (`ssh-keygen -t ed25519` makes one)"
                .to_string(),
        )),
    }
}

/// Authenticate `user` on a connected handle, as `auth` says.
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    auth: &SshAuth,
) -> Result<()> {
    let ssh = |e: russh::Error| remote_err(format!("authentication as {user}: {e}"), None);
    let Some(path) = &auth.key else {
        return match &auth.agent {
            Some(sock) => {
                if agent_auth(handle, user, sock, None).await? {
                    Ok(())
                } else {
                    Err(remote_err(
                        format!("the server accepted none of the ssh-agent's keys for {user}"),
                        "add the workspace's key to the agent (`ssh-add KEY`), or name the key file"
                            .to_string(),
                    ))
                }
            }
            None => Err(remote_err(
                "no SSH key and no ssh-agent to authenticate with".into(),
                "name a private key (the lab's ssh key setting) or start ssh-agent".to_string(),
            )),
        };
    };

    let key = match read_key(path)? {
        KeyFile::Plain(key) => *key,
        KeyFile::Encrypted { text, public } => {
            if let (Some(sock), Some(public)) = (&auth.agent, &public)
                && agent_auth(handle, user, sock, Some(public)).await?
            {
                return Ok(());
            }
            decrypt(path, &text, auth.passphrase.as_ref()).await?
        }
    };
    let public = key.public_key().clone();
    let hash = if key.algorithm().is_rsa() {
        rsa_hash(handle).await.map_err(ssh)?
    } else {
        None
    };
    let result = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(ssh)?;
    match result {
        AuthResult::Success => Ok(()),
        _ => Err(refused(user, path, &public)),
    }
}

/// RSA signatures use SHA-2: the best the server offers, SHA-256 when it does not say.
async fn rsa_hash(
    handle: &Handle<ClientHandler>,
) -> std::result::Result<Option<HashAlg>, russh::Error> {
    Ok(match handle.best_supported_rsa_hash().await? {
        Some(Some(hash)) => Some(hash),
        _ => Some(HashAlg::Sha256),
    })
}

fn refused(user: &str, path: &Path, public: &PublicKey) -> Error {
    remote_err(
        format!(
            "the server refused the key {} ({} {}) for user {user}",
            path.display(),
            public.algorithm(),
            fingerprint(public)
        ),
        format!(
            "the workspace accepts the public keys in ~{user}/.ssh/authorized_keys; check that {}.pub is \
             the key the lab was created with, and the user name",
            path.display()
        ),
    )
}

async fn decrypt(path: &Path, text: &str, ask: Option<&PassphraseFn>) -> Result<PrivateKey> {
    let Some(ask) = ask else {
        return Err(remote_err(
            format!("the SSH key {} is encrypted", path.display()),
            format!(
                "add it to ssh-agent (`ssh-add {}`) or run gpulab where it can ask for the passphrase",
                path.display()
            ),
        ));
    };
    for _ in 0..PASSPHRASE_TRIES {
        let (ask, owned) = (ask.clone(), path.to_path_buf());
        let passphrase = tokio::task::spawn_blocking(move || ask(&owned))
            .await
            .map_err(|e| remote_err(format!("passphrase prompt failed: {e}"), None))?;
        let Some(passphrase) = passphrase else {
            break;
        };
        if let Ok(key) = russh::keys::decode_secret_key(text, Some(&passphrase)) {
            return Ok(key);
        }
    }
    Err(remote_err(
        format!(
            "could not decrypt the SSH key {}: wrong or no passphrase",
            path.display()
        ),
        format!(
            "check it with `ssh-keygen -y -f {}`, or add it to ssh-agent (`ssh-add {}`) where no terminal can ask",
            path.display(),
            path.display()
        ),
    ))
}

/// Try the agent's identities (only `only` when given). `Ok(false)`: the agent had no key the server took.
async fn agent_auth(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    socket: &Path,
    only: Option<&PublicKey>,
) -> Result<bool> {
    let agent_err = |e: russh::keys::Error| {
        remote_err(
            format!("ssh-agent at {}: {e}", socket.display()),
            "check SSH_AUTH_SOCK, or that ssh-agent is running".to_string(),
        )
    };
    let mut agent = AgentClient::connect_uds(socket).await.map_err(agent_err)?;
    let identities = agent.request_identities().await.map_err(agent_err)?;
    for identity in identities {
        let key = identity.public_key().into_owned();
        if only.is_some_and(|o| o.key_data() != key.key_data()) {
            continue;
        }
        let hash = if key.algorithm().is_rsa() {
            rsa_hash(handle)
                .await
                .map_err(|e| remote_err(format!("authentication as {user}: {e}"), None))?
        } else {
            None
        };
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return Ok(true),
            Ok(_) => continue,
            Err(e) => {
                return Err(remote_err(
                    format!("ssh-agent could not sign for {user}: {e:?}"),
                    None,
                ));
            }
        }
    }
    Ok(false)
}
