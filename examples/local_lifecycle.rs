//! Watch a whole lab lifecycle run on this machine, with no AWS account and no GPU: plan → up → status →
//! exec → cp → test → cost → down, driven through the same `Lab` the `gpulab` command uses.
//!
//! The clouds are emulated: AWS is moto (every EC2, IAM and EKS call is the real SDK's, answered by
//! moto), and the cluster is gpulab's Kubernetes emulator, which runs the workspace's commands here, in
//! a sandbox directory. So the GPU checks say there is no GPU — that is the truth here, not a failure of
//! the demo. `scripts/demo` installs moto and runs this:
//!
//! ```text
//! scripts/demo
//! cargo run -p gpulab-examples --example local_lifecycle   # once moto is installed in .venv
//! ```

use std::time::Instant;

use gpulab_core::checks::CheckOptions;
use gpulab_core::events::{Event, Reporter};
use gpulab_core::plan::Plan;
use gpulab_core::remote::{CopyDirection, ExecRequest};
use gpulab_core::spec::SpecLayer;
use gpulab_core::{Lab, Provider};
use gpulab_testkit::LabDir;
use gpulab_testkit::clouds::EmulatedClouds;

/// Prints each finished step and every warning, as `gpulab up` does without a terminal.
struct Steps;

impl Reporter for Steps {
    fn report(&self, event: Event) {
        match event {
            Event::StepFinished {
                step,
                elapsed,
                already_done,
            } => {
                let note = if already_done { " (already done)" } else { "" };
                println!("    ✓ {step}{note} [{:.1}s]", elapsed.as_secs_f64());
            }
            Event::Warning { message } => println!("    warning: {message}"),
            _ => {}
        }
    }
}

fn heading(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    // A throwaway "machine": its own home (no SSH key yet: `up` makes one, as the original scripts did).
    let user = LabDir::new();
    let clouds = EmulatedClouds::start(&user.home()).await?;
    let spec = user
        .inputs(SpecLayer {
            name: Some("demo".into()),
            ..Default::default()
        })
        .resolve()?
        .validate()?;

    heading("gpulab plan: what `up` creates and what it costs (no cloud call)");
    let plan = Plan::new(&spec);
    for resource in &plan.aws {
        println!("    {:<22} {}", resource.kind_name(), resource.name);
    }
    println!(
        "    cost: ${:.4}/hour, ${:.2}/month; ${:.4}/hour with the GPU nodes stopped",
        plan.cost.per_hour, plan.cost.per_month, plan.cost.idle_per_hour
    );

    heading("gpulab up (AWS in moto, the cluster in the Kubernetes emulator)");
    let lab = Lab::new(
        spec,
        Provider::Aws,
        clouds.lab_options(user.home().join(".local/share/gpulab")),
    )
    .await?;
    let up = lab.up(&Steps).await?;
    println!(
        "    workspace {}/{} ready on {} in {:.1}s; kubeconfig {}",
        up.workspace.namespace,
        up.workspace.pod,
        up.workspace.node.as_deref().unwrap_or("?"),
        up.elapsed.as_secs_f64(),
        up.kubeconfig.display()
    );

    heading("gpulab up, again: every step finds its work done and resumes");
    lab.up(&Steps).await?;

    heading("gpulab status");
    let status = lab.status().await?;
    if let Some(provider) = &status.provider {
        println!(
            "    EKS cluster {}, node group {}",
            provider.cluster, provider.node_group
        );
    }
    if let Some(cluster) = &status.cluster {
        for node in &cluster.nodes {
            println!(
                "    node {} ({} GPU allocatable)",
                node.name, node.allocatable_gpus
            );
        }
        for problem in &cluster.problems {
            println!("    ! {problem}");
        }
    }

    heading("gpulab exec -- uname -sm (runs here, in the emulated pod's sandbox)");
    let remote = lab.remote().await?;
    let out = remote.exec(ExecRequest::shell("uname -sm")).await?;
    print!("    {}", String::from_utf8_lossy(&out.stdout));

    heading("gpulab cp train.py :<pod>/ (tar through the API server, atomic)");
    let local = user.work().join("train.py");
    std::fs::write(&local, "import torch\nprint(torch.cuda.is_available())\n")?;
    let pod_dir = clouds.kube.pod_dir("gpulab", &up.workspace.pod);
    std::fs::create_dir_all(&pod_dir)?;
    let copied = remote
        .copy(
            CopyDirection::Upload {
                local,
                remote: pod_dir.display().to_string(),
            },
            &Steps,
        )
        .await?;
    println!("    copied {} file, {} bytes", copied.files, copied.bytes);

    heading("gpulab test --no-vllm (no GPU here: it must say so, not pass)");
    let report = lab
        .test_gpu(&CheckOptions {
            vllm_model: None,
            repeats: 3,
            ..Default::default()
        })
        .await?;
    for (check, result, detail) in report.rows() {
        println!("    {check:<22} {result:<12} {detail}");
    }

    heading("gpulab cost");
    let cost = lab.cost()?;
    println!(
        "    ${:.4}/hour now ({} GPU node), ${:.6} spent so far",
        cost.per_hour, cost.nodes, cost.spent
    );

    heading("gpulab down: everything, then a sweep for anything still tagged with the lab");
    let teardown = lab.down(&Steps).await?;
    println!(
        "    deleted {} resources; left behind: {}",
        teardown.deleted.len(),
        if teardown.leftovers.is_empty() {
            "nothing".to_string()
        } else {
            format!("{:?}", teardown.leftovers)
        }
    );

    println!(
        "\nThe whole lifecycle ran in {:.0}s. On AWS, `gpulab up` takes 15-20 minutes (EKS) and this lab costs ${:.2}/hour;\n`gpulab plan` shows it, `gpulab down` ends it.",
        started.elapsed().as_secs_f64(),
        plan.cost.per_hour
    );
    Ok(())
}
