//! Host key verification: a pinned key (the one gpulab generated for the pod), or trust on first use with the
//! key recorded in the lab's state, following known_hosts semantics.

use std::fmt;
use std::sync::Arc;

use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyOrCertificate};

use crate::{Error, Result};

/// Records a host key seen for the first time (trust on first use), e.g. into the lab's state. An error
/// refuses the connection.
pub type RecordHostKey = Arc<dyn Fn(&PublicKey) -> Result<()> + Send + Sync>;

/// How the server's host key is checked.
#[derive(Clone)]
pub enum HostKeyPolicy {
    /// Only this key is accepted; any other is refused, naming both fingerprints.
    Pinned(PublicKey),
    /// known_hosts semantics: with a `known` key, only that key is accepted; without one, the key the
    /// server presents is accepted and handed to `record`.
    TrustOnFirstUse {
        /// The key recorded on an earlier connection, if any.
        known: Option<PublicKey>,
        /// Called with the server's key when nothing was known yet.
        record: RecordHostKey,
    },
}

impl fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Pinned(key) => f.debug_tuple("Pinned").field(&fingerprint(key)).finish(),
            HostKeyPolicy::TrustOnFirstUse { known, .. } => f
                .debug_struct("TrustOnFirstUse")
                .field("known", &known.as_ref().map(fingerprint))
                .finish_non_exhaustive(),
        }
    }
}

impl HostKeyPolicy {
    /// The key this policy insists on, if any.
    pub fn expected(&self) -> Option<&PublicKey> {
        match self {
            HostKeyPolicy::Pinned(key) => Some(key),
            HostKeyPolicy::TrustOnFirstUse { known, .. } => known.as_ref(),
        }
    }

    /// Host key algorithms in the order to offer them: the expected key's algorithm first, so that a server
    /// with several host keys presents the one that was pinned (as OpenSSH does for known hosts).
    pub(crate) fn preferred_algorithms(&self, defaults: &[Algorithm]) -> Vec<Algorithm> {
        let Some(expected) = self.expected() else {
            return defaults.to_vec();
        };
        let first: Vec<Algorithm> = if expected.algorithm().is_rsa() {
            vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]
        } else {
            vec![expected.algorithm()]
        };
        let rest = defaults.iter().filter(|a| !first.contains(a)).cloned();
        first.iter().cloned().chain(rest).collect()
    }
}

/// The SHA-256 fingerprint of a key as OpenSSH prints it: `SHA256:…`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parse a public key in OpenSSH's one-line format (`ssh-ed25519 AAAA… comment`, as in `*.pub` files,
/// authorized_keys and known_hosts without the host column).
pub fn parse_public_key(line: &str) -> Result<PublicKey> {
    PublicKey::from_openssh(line.trim()).map_err(|e| Error::Remote {
        message: format!("cannot parse SSH public key {:?}: {e}", abbreviate(line)),
        hint: Some("expected one line such as `ssh-ed25519 AAAA… comment`".into()),
    })
}

/// A key in OpenSSH's one-line format, without its comment: what the lab's state stores.
pub fn format_public_key(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| fingerprint(&key))
}

fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Why the handshake stopped, as the russh handler reports it.
#[derive(Debug)]
pub(crate) enum HandlerError {
    /// The SSH library failed.
    Ssh(russh::Error),
    /// The host key policy refused the server, with a complete message.
    Refused(Error),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

/// The russh client handler: checks the host key against the policy.
pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
    host: String,
}

impl ClientHandler {
    pub(crate) fn new(policy: HostKeyPolicy, host: String) -> Self {
        ClientHandler { policy, host }
    }

    fn check(&self, presented: &PublicKey) -> Result<()> {
        match &self.policy {
            HostKeyPolicy::Pinned(expected)
            | HostKeyPolicy::TrustOnFirstUse {
                known: Some(expected),
                ..
            } => {
                if expected.key_data() == presented.key_data() {
                    Ok(())
                } else {
                    Err(mismatch(&self.host, expected, presented))
                }
            }
            HostKeyPolicy::TrustOnFirstUse {
                known: None,
                record,
            } => record(presented),
        }
    }
}

fn mismatch(host: &str, expected: &PublicKey, presented: &PublicKey) -> Error {
    Error::Remote {
        message: format!(
            "WARNING: the host key of {host} has changed: expected {} {}, the server presented {} {}; \
             refusing to connect (someone may be intercepting the connection)",
            expected.algorithm(),
            fingerprint(expected),
            presented.algorithm(),
            fingerprint(presented),
        ),
        hint: Some(
            "if the workspace was recreated on purpose, its new key is in the lab's state after \
             `gpulab up`; otherwise do not connect and find out who answers on this address"
                .into(),
        ),
    }
}

impl russh::client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.check(key).map_err(HandlerError::Refused)?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => Err(HandlerError::Refused(Error::Remote {
                message: format!(
                    "{} presented a host certificate; gpulab pins plain host keys",
                    self.host
                ),
                hint: None,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEN7HBTe3gkJgWbZi81V0IPaO/2YlEJhp+En7NdQZedx gpulab-test";

    #[test]
    fn keys_parse_format_and_fingerprint_like_openssh() {
        let key = parse_public_key(ED).unwrap();
        assert!(fingerprint(&key).starts_with("SHA256:"));
        let line = format_public_key(&key);
        assert!(line.starts_with("ssh-ed25519 AAAA") && !line.contains("gpulab-test"));
        assert_eq!(parse_public_key(&line).unwrap().key_data(), key.key_data());
        assert!(parse_public_key("ssh-ed25519 not-base64").is_err());
    }

    #[test]
    fn the_expected_algorithm_is_offered_first() {
        let key = parse_public_key(ED).unwrap();
        let defaults = [
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Ed25519,
        ];
        let order = HostKeyPolicy::Pinned(key).preferred_algorithms(&defaults);
        assert_eq!(order[0], Algorithm::Ed25519);
        assert_eq!(order.len(), 2);
    }
}
