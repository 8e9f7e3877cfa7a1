//! The kubeconfig gpulab writes for kubectl, and the ExecCredential that `gpulab token` prints: the
//! kubeconfig's user runs `gpulab token --lab <name>` as its exec credential plugin, so kubectl works
//! without the aws CLI.

use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::provision::BearerToken;
use crate::{Error, Result};

/// The exec credential plugin API version of the kubeconfig and of [`exec_credential_json`].
pub const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1beta1";

/// The kubeconfig YAML for lab `lab`: one cluster, one user, one context, all named after the lab. The
/// user's credentials come from `<gpulab> token --lab <lab>`.
pub fn kubeconfig_yaml(lab: &str, endpoint: &str, ca_pem: Option<&[u8]>, gpulab: &str) -> String {
    let mut cluster = serde_json::Map::new();
    cluster.insert("server".into(), json!(endpoint));
    if let Some(ca) = ca_pem {
        cluster.insert(
            "certificate-authority-data".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(ca)),
        );
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": lab, "cluster": cluster}],
        "users": [{
            "name": lab,
            "user": {"exec": {
                "apiVersion": EXEC_API_VERSION,
                "command": gpulab,
                "args": ["token", "--lab", lab],
                "interactiveMode": "Never",
                "provideClusterInfo": false,
            }},
        }],
        "contexts": [{"name": lab, "context": {"cluster": lab, "user": lab}}],
        "current-context": lab,
        "preferences": {},
    });
    serde_yaml::to_string(&doc).expect("a kubeconfig always serialises")
}

/// Write [`kubeconfig_yaml`] to `path` with mode 0600, atomically (a temporary file in the same
/// directory, renamed over `path`), creating the directory if needed.
pub fn write_kubeconfig(
    path: &Path,
    lab: &str,
    endpoint: &str,
    ca_pem: Option<&[u8]>,
    gpulab: &str,
) -> Result<()> {
    let yaml = kubeconfig_yaml(lab, endpoint, ca_pem, gpulab);
    write_private(path, yaml.as_bytes())
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create the directory of {}", path.display()), e))?;
    }
    crate::private_files::write_private_atomically(path, contents)
}

/// The ExecCredential JSON `gpulab token` prints for kubectl: the token and its expiry (RFC 3339).
pub fn exec_credential_json(token: &BearerToken) -> String {
    let expires = aws_smithy_types::DateTime::from(token.expires_at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default();
    json!({
        "kind": "ExecCredential",
        "apiVersion": EXEC_API_VERSION,
        "spec": {},
        "status": {"expirationTimestamp": expires, "token": token.token},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn kubeconfig_uses_gpulab_as_exec_plugin_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/kubeconfig");
        write_kubeconfig(
            &path,
            "dev",
            "https://x.eks.amazonaws.com",
            Some(b"PEM"),
            "gpulab",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let doc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"], "dev");
        let exec = &doc["users"][0]["user"]["exec"];
        assert_eq!(exec["apiVersion"], EXEC_API_VERSION);
        assert_eq!(exec["command"], "gpulab");
        assert_eq!(exec["args"], json!(["token", "--lab", "dev"]));
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        // Rewriting replaces the file and keeps it private.
        write_kubeconfig(&path, "dev", "https://y", None, "/usr/bin/gpulab").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("https://y")
        );
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn exec_credential_has_token_and_rfc3339_expiry() {
        let token = BearerToken {
            token: "k8s-aws-v1.abc".into(),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let v: serde_json::Value = serde_json::from_str(&exec_credential_json(&token)).unwrap();
        assert_eq!(v["kind"], "ExecCredential");
        assert_eq!(v["apiVersion"], EXEC_API_VERSION);
        assert_eq!(v["status"]["token"], "k8s-aws-v1.abc");
        assert_eq!(v["status"]["expirationTimestamp"], "2023-11-14T22:13:20Z");
    }
}
