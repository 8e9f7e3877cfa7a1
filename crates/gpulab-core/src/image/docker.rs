//! Building the image with a local docker daemon, when one answers.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::events::{Reporter, reported_step};
use crate::{Error, Result};
use gpulab_model::aws::RegistryLogin;

/// The docker CLI, found on `PATH`.
const DOCKER: &str = "docker";

/// True when `docker info` answers: a docker CLI with a running daemon it can reach.
pub async fn docker_available() -> bool {
    Command::new(DOCKER)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn docker(program: &Path, args: &[&str], stdin: Option<&[u8]>, context: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("{context}: running docker"), e))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes)
            .await
            .map_err(|e| Error::io(format!("{context}: writing to docker"), e))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| Error::io(format!("{context}: waiting for docker"), e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(Error::Workspace {
        message: format!(
            "{context} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
        hint: None,
    })
}

/// `docker build`'s arguments for `image` from the context `dir`: for [`super::PLATFORM`] whatever the
/// machine (an arm64 laptop would otherwise build an image that fails on the GPU node with
/// `exec format error`), with fresh base layers.
pub fn docker_build_args<'a>(image: &'a str, dir: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--platform",
        super::PLATFORM,
        "--pull",
        "-t",
        image,
        dir,
    ]
}

/// Build `dockerfile` as `image` with the local docker daemon, log in to the registry when given
/// credentials, and push.
pub async fn build_with_docker(
    dockerfile: &str,
    image: &str,
    login: Option<&RegistryLogin>,
    reporter: &dyn Reporter,
) -> Result<()> {
    build_with(Path::new(DOCKER), dockerfile, image, login, reporter).await
}

/// [`build_with_docker`] with the docker CLI at `program`.
pub(crate) async fn build_with(
    program: &Path,
    dockerfile: &str,
    image: &str,
    login: Option<&RegistryLogin>,
    reporter: &dyn Reporter,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "gpulab-image-{}-{}",
        std::process::id(),
        super::image_tag(image)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("Dockerfile");
    std::fs::write(&path, dockerfile)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    let result = async {
        let dir_arg = dir.to_string_lossy().into_owned();
        for (step, args, stdin) in [
            (
                "docker build",
                docker_build_args(image, dir_arg.as_str()),
                None,
            ),
            (
                "docker login",
                login
                    .map(|l| {
                        vec![
                            "login",
                            "--username",
                            l.username.as_str(),
                            "--password-stdin",
                            l.registry.as_str(),
                        ]
                    })
                    .unwrap_or_default(),
                login.map(|l| l.password.as_bytes()),
            ),
            ("docker push", vec!["push", image], None),
        ] {
            if args.is_empty() {
                continue;
            }
            reported_step(reporter, step, async {
                docker(program, &args, stdin, step)
                    .await
                    .map(|()| ((), false))
            })
            .await?;
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
