//! A lab from Rust, start to end: build → up → exec → copy → test → down, the code on gpulab-core's
//! front page (and the README's "From Rust"), run against emulated clouds so it needs no AWS account.
//!
//! AWS is moto (every EC2, IAM and EKS call is the real SDK's, answered by moto) and the cluster is
//! gpulab's Kubernetes emulator, which runs the workspace's commands on this machine, in a sandbox
//! directory: so the GPU test finds no GPU, and says so. The three lines marked `emulated` are all that
//! differs from a lab on AWS.
//!
//! ```text
//! cargo run -p gpulab-examples --example lab_lifecycle   # moto from .venv: scripts/demo installs it
//! ```
//!
//! `cargo test` runs it too (`test = true` in examples/Cargo.toml), so it keeps working.

use gpulab_core::Lab;
use gpulab_core::checks::CheckOptions;
use gpulab_core::events::Lines;
use gpulab_core::remote::{CopyDirection, ExecRequest};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let user = LabDir::new(); // emulated: a throwaway home, with no gpulab.toml and no SSH key
    let clouds = EmulatedClouds::start(&user.home()).await?; // emulated: moto and the cluster
    let lab = Lab::builder()
        .name("dev")
        .node_type("g5.xlarge")
        .inputs(user.inputs(Default::default())) // emulated: the throwaway home's settings, and
        .options(clouds.lab_options(user.home().join(".local/share/gpulab"))) // the clouds' endpoints
        .build()
        .await?;
    let up = lab.up(&Lines).await?;
    println!(
        "workspace {}/{} ready in {:.1}s",
        up.workspace.namespace,
        up.workspace.pod,
        up.elapsed.as_secs_f64()
    );

    let hello = lab
        .exec(ExecRequest::shell("echo hello from $(uname -s)"))
        .await?;
    print!("{}", String::from_utf8_lossy(&hello.stdout));

    // The emulated pod's filesystem is a sandbox directory here, so the copy goes there rather than
    // to /workspace.
    let train = user.work().join("train.py");
    std::fs::write(&train, "import torch\nprint(torch.cuda.is_available())\n")?;
    let pod_dir = clouds
        .kube
        .pod_dir(&up.workspace.namespace, &up.workspace.pod);
    std::fs::create_dir_all(&pod_dir)?;
    let upload = CopyDirection::Upload {
        local: train,
        remote: pod_dir.display().to_string(),
    };
    let copied = lab.remote().await?.copy(upload, &Lines).await?;
    println!("copied {} file, {} bytes", copied.files, copied.bytes);

    let checks = CheckOptions {
        vllm_model: None,
        repeats: 1,
        ..Default::default()
    };
    let report = lab.test_gpu(&checks).await?;
    for (check, verdict, detail) in report.rows() {
        println!("{check:<22} {verdict:<12} {detail}");
    }

    let down = lab.down(&Lines).await?;
    if !down.leftovers.is_empty() {
        return Err(format!("down left {:?}", down.leftovers).into());
    }
    println!(
        "down: {} resources deleted, nothing left",
        down.deleted.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_against_the_emulated_clouds() {
        super::main().expect("the example runs to the end");
    }
}
