//! `gpulab plan`: everything `up` would create and what it would cost, from the spec alone.

use clap::Args;
use gpulab_core::catalog::{self, HOURS_PER_MONTH};
use gpulab_core::manifest::KubeObject;
use gpulab_core::plan::Plan;
use gpulab_core::spec::{AccessMode, ValidSpec};

use crate::args::{GlobalArgs, SpecArgs};
use crate::printer::{Printer, dollars, table};

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A summary for people.
    Table,
    /// The whole plan as JSON.
    Json,
    /// The Kubernetes manifests, as `kubectl apply -f` takes them.
    Yaml,
}

pub(crate) fn run(
    global: &GlobalArgs,
    args: &PlanArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let spec = args.spec.resolve(global)?.validate()?;
    let plan = Plan::new(&spec);
    match args.output {
        Format::Json => printer.json(&plan),
        Format::Yaml => printer.line(KubeObject::to_yaml_stream(&plan.kubernetes).trim_end()),
        Format::Table => print_table(&spec, &plan, printer),
    }
    Ok(())
}

fn print_table(spec: &ValidSpec, plan: &Plan, printer: &Printer) {
    let s = &spec.spec;
    let i = plan.instance;
    printer.line(format!(
        "Plan for lab {} in {} ({})",
        plan.lab, plan.region, spec.region.location
    ));
    printer.line(format!(
        "  GPU nodes  {} × {} ({}): {} {} GiB, {} vCPUs, {} GiB memory",
        s.nodes.desired,
        i.name,
        s.nodes.capacity,
        i.gpu_summary(),
        i.gpu_memory_gib(),
        i.vcpus,
        i.memory_gib
    ));
    printer.line(format!(
        "  Workspace  pod {}/{}-0 (a StatefulSet of one: back by itself on a new node): {} GPU, {} CPU, {} memory, {} /workspace volume; image {}",
        s.workspace.namespace,
        s.workspace.pod_name,
        s.workspace.gpus,
        spec.cpu,
        spec.memory,
        spec.volume_size,
        spec.image
    ));
    let budget = gpulab_core::capacity::node_budget(i);
    printer.line(format!(
        "  Node room  {} allocatable per node after kubelet's reservations; system pods request {}; {} kept for an image build; {} for workspaces (\"auto\" takes its GPUs' share)",
        budget.allocatable, budget.system_pods, budget.image_build, budget.workspaces
    ));
    // The versions the workspace will get: the matrix's for this GPU generation, or the user's list.
    let packages = gpulab_core::spec::WorkspacePackages::for_spec(spec);
    let stack = spec.stack;
    let mut python: Vec<String> = packages.torch.iter().cloned().collect();
    python.extend(packages.python.iter().cloned());
    if s.workspace.jupyter {
        python.extend(
            gpulab_core::workspace::versions::JUPYTER_PACKAGES
                .iter()
                .map(|p| p.to_string()),
        );
    }
    printer.line(format!(
        "  Software   {} (compute capability {}): {}{}; models in {}",
        i.gpu_model().architecture,
        stack.compute_capability,
        if python.is_empty() {
            "no Python packages".to_string()
        } else {
            python.join(" ")
        },
        packages
            .torch_index
            .as_deref()
            .map(|i| format!(" (PyTorch from {i})"))
            .unwrap_or_default(),
        stack.dtype
    ));
    if !stack.env.is_empty() {
        let env: Vec<String> = stack.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        printer.line(format!("  Settings   {}", env.join(" ")));
    }
    let access = match s.access.mode {
        AccessMode::PortForward => {
            "SSH and Jupyter through the Kubernetes API server; no public ports".to_string()
        }
        AccessMode::LoadBalancer => format!(
            "SSH and Jupyter on a Network Load Balancer, admitting only {}",
            s.access.allowed_cidrs_text()
        ),
    };
    printer.line(format!("  Access     {access}"));
    let a = &plan.autostop;
    if a.agent {
        printer.line(format!(
            "  Autostop   GPU nodes to 0 {}: an agent pod ({}, requests {}) with IAM role {} allowed only {} on {}; in the cluster only {}",
            a.summary,
            a.image,
            a.requests,
            a.role,
            a.aws_actions.join(" and "),
            a.aws_resource,
            a.kubernetes_rules.join("; "),
        ));
    } else {
        printer.line(format!(
            "  Autostop   off: the lab runs until `gpulab stop` or `down` (${:.2} a day); --autostop 30m or --budget 25 stop it by themselves",
            plan.cost.per_hour * 24.0
        ));
    }

    printer.heading(format!(
        "AWS resources ({}), each tagged {}={}",
        plan.aws.len(),
        gpulab_core::naming::LAB_KEY,
        plan.lab
    ));
    let rows: Vec<Vec<String>> = plan
        .aws
        .iter()
        .map(|r| vec![r.kind_name().into(), r.name.clone(), r.detail.clone()])
        .collect();
    printer.line(table(&["KIND", "NAME", "DETAIL"], &rows));

    printer.heading(format!(
        "Kubernetes objects ({}); `gpulab plan -o yaml` prints them",
        plan.kubernetes.len()
    ));
    let rows: Vec<Vec<String>> = plan
        .kubernetes
        .iter()
        .map(|o| {
            vec![
                o.kind().into(),
                o.namespace().unwrap_or("-").into(),
                o.name().into(),
            ]
        })
        .collect();
    printer.line(table(&["KIND", "NAMESPACE", "NAME"], &rows));

    let cost = &plan.cost;
    printer.heading("Cost");
    let mut rows: Vec<Vec<String>> = cost
        .items
        .iter()
        .map(|c| {
            vec![
                c.item.clone(),
                c.quantity.clone(),
                dollars(c.per_hour, 4),
                dollars(c.per_hour.map(|h| h * HOURS_PER_MONTH), 2),
            ]
        })
        .collect();
    let total = if cost.complete {
        "Total"
    } else {
        "Total (known items)"
    };
    rows.push(vec![
        total.into(),
        String::new(),
        format!("{:.4}", cost.per_hour),
        format!("{:.2}", cost.per_month),
    ]);
    printer.line(table(&["ITEM", "QUANTITY", "$/HOUR", "$/MONTH"], &rows));
    printer.line(format!(
        "  With the GPU nodes scaled to zero the lab still costs ${:.2}/hour (${:.0}/month).",
        cost.idle_per_hour,
        cost.idle_per_hour * HOURS_PER_MONTH
    ));
    for note in &cost.notes {
        printer.line(format!("  {note}"));
    }
    printer.line(format!(
        "  Instance prices as of {}.",
        catalog::PRICES_AS_OF
    ));

    if !plan.warnings.is_empty() {
        printer.heading("Warnings");
        for warning in &plan.warnings {
            printer.line(format!("  - {warning}"));
        }
    }
    printer.hint("\nNothing was created: a plan needs no AWS account.");
}
