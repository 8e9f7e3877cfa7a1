//! Plan a lab from Rust: resolve the spec as the CLI does (defaults, gpulab.toml, environment), validate
//! it, and print what `up` would create and what it would cost. Needs no AWS account.
//!
//! `cargo run -p gpulab-examples --example plan_show -- g5.xlarge`

use gpulab_core::plan::Plan;
use gpulab_core::spec::{NodesLayer, SpecInputs, SpecLayer};

fn main() -> Result<(), gpulab_core::Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| gpulab_core::Error::io("read the working directory", e))?;
    let mut inputs = SpecInputs::from_process(&cwd, None);
    if let Some(instance_type) = std::env::args().nth(1) {
        inputs.overrides = SpecLayer {
            nodes: NodesLayer {
                instance_type: Some(instance_type),
                ..Default::default()
            },
            ..Default::default()
        };
    }
    let spec = inputs.resolve()?.validate()?;
    let plan = Plan::new(&spec);

    println!(
        "lab {} in {}: {} × {}",
        plan.lab,
        plan.region,
        spec.nodes().desired,
        plan.instance.name
    );
    for resource in &plan.aws {
        println!("  {:<26} {}", resource.kind_name(), resource.name);
    }
    for object in &plan.kubernetes {
        println!(
            "  {:<26} {}",
            format!("k8s:{}", object.kind()),
            object.name()
        );
    }
    println!(
        "cost: ${:.2}/hour, ${:.0}/month",
        plan.cost.per_hour, plan.cost.per_month
    );
    Ok(())
}
