//! The workspace Dockerfile's `RUN` steps, run for real on Ubuntu 22.04 and 24.04 roots (no image
//! registry is reachable here, so no `docker build`): each root is made by debootstrap (cached), and a
//! container from it runs the Dockerfile's `ENV` and `RUN` lines in order, as a builder would. On 24.04
//! the old Dockerfile's `pip install --upgrade pip` into the system Python fails ("Cannot uninstall
//! pip ... installed by debian"); the venv in /opt/venv does not. A small package set (no PyTorch).

use std::time::Duration;

use gpulab_core::image::ImageOptions;
use gpulab_testkit::rootfs::{self, Bind, Container, ContainerSpec, Distro, RootFs};

/// The Dockerfile as a shell script: its `ENV`s exported, its `RUN`s in order, `WORKDIR` made.
fn as_script(dockerfile: &str) -> String {
    let mut script = String::from("set -e\n");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(line);
            logical.push(std::mem::take(&mut current));
        }
    }
    for line in logical {
        let line = line.trim();
        if let Some(env) = line.strip_prefix("ENV ") {
            script.push_str(&format!("export {env}\n"));
        } else if let Some(run) = line.strip_prefix("RUN ") {
            script.push_str(&format!(
                "echo '>>> RUN step'\n/bin/sh -ec {}\n",
                sh_quote(run)
            ));
        } else if let Some(dir) = line.strip_prefix("WORKDIR ") {
            script.push_str(&format!("mkdir -p {dir}\n"));
        }
    }
    script.push_str("echo DOCKERFILE-OK\n");
    script
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn run_steps(distro: &Distro) {
    let root = tokio::task::spawn_blocking({
        let d = distro.clone();
        move || RootFs::cached(&d)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("Ubuntu {} root: {e}", distro.version));
    let options = ImageOptions {
        base_image: format!("ubuntu:{}", distro.version),
        apt_packages: [
            "openssh-server",
            "python3",
            "python3-venv",
            "python3-dev",
            "git",
            "curl",
        ]
        .map(String::from)
        .to_vec(),
        torch: None,
        torch_index: None,
        python_packages: vec!["wheel".into()],
        jupyter: false,
        slurm: false,
    };
    let dockerfile = options.dockerfile();
    let work = tempfile::tempdir().unwrap();
    let steps = work.path().join("steps");
    std::fs::create_dir_all(&steps).unwrap();
    std::fs::write(steps.join("build.sh"), as_script(&dockerfile)).unwrap();
    let spec = ContainerSpec {
        argv: vec!["/bin/bash".into(), "/steps/build.sh".into()],
        env: vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )],
        working_dir: "/".into(),
        hostname: "image-build".into(),
        binds: vec![Bind {
            host: steps,
            container: "/steps".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    let mut container = Container::start(&root, &spec, &work.path().join("c"))
        .await
        .expect("start the build container");
    let code = loop {
        if let Some(code) = container.exited() {
            break code;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log = std::fs::read_to_string(&container.log).unwrap_or_default();
    container.remove().await;
    assert!(
        code == 0 && log.contains("DOCKERFILE-OK"),
        "Ubuntu {}: the Dockerfile's steps failed (exit {code}):\n{}",
        distro.version,
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_builds_on_ubuntu_22_04_and_24_04() {
    if let Some(why) = rootfs::missing_tools() {
        eprintln!("skipped: {why}");
        return;
    }
    run_steps(&Distro::UBUNTU_22_04).await;
    run_steps(&Distro::UBUNTU_24_04).await;
}
