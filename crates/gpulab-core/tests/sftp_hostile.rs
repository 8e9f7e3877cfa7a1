//! A hostile workspace cannot make `gpulab cp :/remote/dir .` write outside the target. The server here
//! is a test double, an in-process russh server whose SFTP subsystem lists names no real sshd would
//! (`../x`, `a/b`, an absolute path, NUL): a compromised pod could answer anything. OpenSSH never lists
//! such names, so the real sshd of the other tests cannot play this part.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gpulab_core::Error;
use gpulab_core::events::Silent;
use gpulab_core::remote::ssh::{HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key};
use gpulab_core::remote::{CopyDirection, RemoteExec};
use gpulab_core::workspace::generate_host_key;
use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, File, FileAttributes, Handle, Name, Status, StatusCode, Version,
};
use tokio::sync::Mutex;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

/// The SSH side: accepts any key, serves the hostile SFTP subsystem.
struct Ssh {
    channels: Arc<Mutex<HashMap<ChannelId, Channel<Msg>>>>,
    listing: Vec<String>,
}

impl russh::server::Handler for Ssh {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.lock().await.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    /// A server that runs no commands: every exec is refused, so a directory cannot come as one tar stream
    /// and the copy goes file by file over SFTP, where the hostile listing is.
    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel_id)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let channel = self.channels.lock().await.remove(&channel_id);
        match (name, channel) {
            ("sftp", Some(channel)) => {
                session.channel_success(channel_id)?;
                let sftp = HostileSftp {
                    listing: self.listing.clone(),
                    listed: false,
                };
                russh_sftp::server::run(channel.into_stream(), sftp).await;
            }
            _ => session.channel_failure(channel_id)?,
        }
        Ok(())
    }
}

/// An SFTP server whose every directory holds the names in `listing` (plus `.` and `..`), each a small
/// regular file.
struct HostileSftp {
    listing: Vec<String>,
    listed: bool,
}

fn attrs(kind: u32) -> FileAttributes {
    FileAttributes {
        size: Some(4),
        permissions: Some(kind | 0o4755),
        mtime: Some(1_700_000_000),
        atime: Some(1_700_000_000),
        ..Default::default()
    }
}

impl russh_sftp::server::Handler for HostileSftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let kind = if path.ends_with("/evil") {
            S_IFDIR
        } else {
            S_IFREG
        };
        Ok(Attrs {
            id,
            attrs: attrs(kind),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(path)],
        })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        self.listed = false;
        Ok(Handle { id, handle: path })
    }

    async fn readdir(&mut self, id: u32, _handle: String) -> Result<Name, Self::Error> {
        if self.listed {
            return Err(StatusCode::Eof);
        }
        self.listed = true;
        let mut files = vec![
            File::new(".", attrs(S_IFDIR)),
            File::new("..", attrs(S_IFDIR)),
        ];
        files.extend(
            self.listing
                .iter()
                .map(|name| File::new(name.clone(), attrs(S_IFREG))),
        );
        Ok(Name { id, files })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        _pflags: russh_sftp::protocol::OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        Ok(Handle {
            id,
            handle: filename,
        })
    }

    async fn read(
        &mut self,
        id: u32,
        _handle: String,
        offset: u64,
        _len: u32,
    ) -> Result<russh_sftp::protocol::Data, Self::Error> {
        if offset > 0 {
            return Err(StatusCode::Eof);
        }
        Ok(russh_sftp::protocol::Data {
            id,
            data: b"pwn\n".to_vec(),
        })
    }

    async fn close(&mut self, id: u32, _handle: String) -> Result<Status, Self::Error> {
        Ok(Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "Ok".into(),
            language_tag: "en-US".into(),
        })
    }
}

/// A session to a hostile server listing `listing` in every directory.
async fn hostile_session(listing: &[&str], dir: &Path) -> SshSession {
    let (host_private, host_public) = generate_host_key("hostile-workspace").unwrap();
    let config = russh::server::Config {
        keys: vec![PrivateKey::from_openssh(&host_private).unwrap()],
        ..Default::default()
    };
    let (client, server) = tokio::io::duplex(1 << 20);
    let handler = Ssh {
        channels: Arc::default(),
        listing: listing.iter().map(|s| s.to_string()).collect(),
    };
    tokio::spawn(async move {
        let running = russh::server::run_stream(Arc::new(config), server, handler)
            .await
            .expect("serve SSH");
        let _ = running.await;
    });
    let (user_private, _) = generate_host_key("user").unwrap();
    let key = dir.join("id_ed25519");
    std::fs::write(&key, user_private).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let options = SshOptions::new(
        "root",
        SshAuth::key(&key),
        HostKeyPolicy::Pinned(parse_public_key(&host_public).unwrap()),
    );
    SshSession::connect_stream(client, "hostile", options)
        .await
        .expect("connect to the test double")
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            found.push(
                path.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_leave_the_target_are_refused_and_nothing_is_written() {
    for evil in ["../escaped", "a/b", "/tmp/abs", "x\0y"] {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let ssh = hostile_session(&["fine.txt", evil], dir.path()).await;
        let err = ssh
            .copy(
                CopyDirection::Download {
                    remote: "/evil".into(),
                    local: target.clone(),
                },
                &Silent,
            )
            .await
            .expect_err(evil);
        let Error::Remote { message, .. } = &err else {
            panic!("{evil:?}: expected a remote error, got {err}");
        };
        assert!(message.contains("not a file name"), "{evil:?}: {message}");
        // Nothing at all: not the escaped file, not even the good one (the listing is checked first).
        assert_eq!(
            files_under(dir.path()),
            ["id_ed25519", "target"],
            "{evil:?}"
        );
        ssh.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_listing_still_downloads_with_modes_masked() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let ssh = hostile_session(&["fine.txt"], dir.path()).await;
    ssh.copy(
        CopyDirection::Download {
            remote: "/evil".into(),
            local: target.clone(),
        },
        &Silent,
    )
    .await
    .unwrap();
    let file = target.join("evil/fine.txt");
    assert_eq!(std::fs::read(&file).unwrap(), b"pwn\n");
    // The server said 4755: set-user-ID is not copied.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o755);
    ssh.close().await.unwrap();
}
