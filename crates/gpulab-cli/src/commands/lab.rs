//! The lab commands: `up`, `status`, `down`, `ls`, `cost`, `stop`/`start`, `exec`, `cp`, `sync`, `token`.
//! Each resolves the lab, calls one `Lab` method, and prints the result.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use gpulab_core::lab::{CostReport, LabStatus, UpReport};
use gpulab_core::naming::LabId;
use gpulab_core::remote::{ExecRequest, ExecStreams};
use gpulab_core::spec::SpecInputs;
use gpulab_core::{Error, Lab, Provider};

use crate::args::{GlobalArgs, SpecArgs, lab_options};
use crate::printer::{Printer, dollars, table};
use crate::progress::Progress;

/// Which lab a command works on.
#[derive(Debug, Args)]
pub(crate) struct LabArg {
    /// The lab [env: CLUSTER_NAME] [default: the lab of the current settings, gpu-learning-cluster].
    #[arg(long = "name", value_name = "LAB")]
    pub(crate) name: Option<String>,
}

/// Output of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Table,
    /// JSON.
    Json,
}

impl LabArg {
    /// The lab's name: the flag, else the name the settings resolve to.
    fn resolve_name(&self, global: &GlobalArgs) -> gpulab_core::Result<String> {
        if let Some(name) = &self.name {
            return Ok(name.clone());
        }
        let cwd =
            std::env::current_dir().map_err(|e| Error::io("read the working directory", e))?;
        Ok(SpecInputs::from_process(&cwd, global.config.clone())
            .resolve()?
            .spec
            .name)
    }

    /// The lab from its local state.
    pub(crate) async fn load(&self, global: &GlobalArgs) -> gpulab_core::Result<Lab> {
        Lab::load(&self.resolve_name(global)?, lab_options()).await
    }
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Use an existing cluster through this kubeconfig context instead of creating one on AWS.
    #[arg(long, value_name = "CONTEXT")]
    context: Option<String>,
    /// Use an existing cluster through this kubeconfig (its current context, or --context) [default
    /// with --context: KUBECONFIG, ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Output format of the final report.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

pub(crate) async fn up(
    global: &GlobalArgs,
    args: &UpArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let spec = args.spec.resolve(global)?.validate()?;
    let provider = Provider::from_options(args.context.clone(), args.kubeconfig.clone());
    let name = spec.name().to_string();
    let lab = Lab::new(spec, provider, lab_options()).await?;
    let progress = Progress::new(global.quiet);
    let result = tokio::select! {
        result = lab.up(&progress) => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    progress.finish();
    if result.is_err() && lab.state().ok().flatten().is_some() {
        printer.hint(format!(
            "Rerun `gpulab up` to resume where this stopped, or `gpulab down --name {name}` to remove what was created."
        ));
    }
    let report = result?;
    match args.output {
        Format::Json => printer.json(&report),
        Format::Table => print_up(&report, printer),
    }
    Ok(())
}

fn print_up(report: &UpReport, printer: &Printer) {
    printer.line(format!(
        "Lab {} is up in {}s.",
        report.lab,
        report.elapsed.as_secs()
    ));
    printer.line(format!(
        "  workspace  pod {}/{} on {}",
        report.workspace.namespace,
        report.workspace.pod,
        report.workspace.node.as_deref().unwrap_or("?")
    ));
    printer.line(format!(
        "  kubectl    export KUBECONFIG={}",
        report.kubeconfig.display()
    ));
    printer.line(format!(
        "  connect    gpulab ssh --name {}        (or: gpulab ssh-config, then ssh gpulab-{})",
        report.lab, report.lab
    ));
    printer.line(format!("  jupyter    gpulab jupyter --name {}", report.lab));
    printer.line(format!("  test       gpulab test --name {}", report.lab));
    if !report.cost.is_priced() {
        printer.line(format!(
            "  cost       not priced: {}",
            report.cost.notes.join(" ")
        ));
        return;
    }
    printer.line(format!(
        "  cost       ${:.2}/hour (${:.0}/month) until `gpulab down --name {}`; `gpulab stop` keeps it for ${:.2}/hour",
        report.cost.per_hour, report.cost.per_month, report.lab, report.cost.idle_per_hour
    ));
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

pub(crate) async fn status(
    global: &GlobalArgs,
    args: &StatusArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let status = lab.status().await?;
    match args.output {
        Format::Json => printer.json(&status),
        Format::Table => print_status(&status, printer),
    }
    Ok(())
}

fn print_status(status: &LabStatus, printer: &Printer) {
    use gpulab_core::status::PodGpus;
    printer.line(format!("Lab {}", status.lab));
    if let Some(p) = &status.provider {
        printer.line(format!("  cluster        {}", p.cluster));
        printer.line(format!("  node group     {}", p.node_group));
    }
    if let Some(error) = &status.cluster_error {
        printer.line(format!("  cluster API    not reachable: {error}"));
    }
    if let Some(cluster) = &status.cluster {
        let api = match (&cluster.server_version, &cluster.error) {
            (Some(version), _) => format!("reachable, Kubernetes {version}"),
            (None, Some(error)) => format!("not reachable: {error}"),
            _ => "not reachable".into(),
        };
        printer.line(format!("  cluster API    {api}"));
        for node in &cluster.nodes {
            printer.line(format!(
                "  node           {} {}{}: {} GPU allocatable",
                node.name,
                node.instance_type.as_deref().unwrap_or(""),
                if node.ready { "" } else { " (not ready)" },
                node.allocatable_gpus
            ));
        }
        if let Some(plugin) = &cluster.device_plugin {
            printer.line(format!(
                "  device plugin  {} ({} of {} pods ready)",
                plugin
                    .installed_version
                    .as_deref()
                    .unwrap_or("not installed"),
                plugin.ready,
                plugin.desired
            ));
        }
        if let Some(ws) = &cluster.workspace {
            let ready = if ws.ready { ", ready" } else { "" };
            printer.line(format!(
                "  workspace      {}/{} {}{ready}",
                ws.namespace, ws.pod, ws.phase
            ));
        }
        let gpus = match &cluster.gpus {
            PodGpus::Visible { gpus } => gpus
                .iter()
                .map(|g| format!("{} {}", g.index, g.name))
                .collect::<Vec<_>>()
                .join(", "),
            PodGpus::NotQueried { reason } => format!("not checked: {reason}"),
            PodGpus::Unavailable { reason } => format!("none visible: {reason}"),
        };
        printer.line(format!("  GPUs in pod    {gpus}"));
        if let Some(slurm) = &cluster.slurm {
            use gpulab_core::slurm::SlurmState;
            let slurm = match slurm {
                SlurmState::NotInstalled => "not set up (gpulab slurm setup)".to_string(),
                SlurmState::NotRunning { message } => format!(
                    "not running: {} (gpulab slurm setup restarts it)",
                    message.lines().last().unwrap_or("").trim()
                ),
                SlurmState::Running { nodes } => nodes
                    .iter()
                    .map(|n| format!("{} {} {}", n.name, n.state, n.gres))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            printer.line(format!("  Slurm          {slurm}"));
        }
        for service in &cluster.services {
            let address = service.external_address.as_deref().unwrap_or("private");
            printer.line(format!(
                "  service        {} {} {:?} ({address})",
                service.name, service.kind, service.ports
            ));
        }
        for problem in &cluster.problems {
            printer.line(format!("  ! {problem}"));
        }
    }
    print_cost_lines(&status.cost, printer);
    if let Some(autostop) = &status.autostop {
        if autostop.settings.is_on() {
            printer.line(format!(
                "  autostop       {}: {}",
                autostop.settings.describe(),
                autostop.next
            ));
        } else {
            printer.line("  autostop       off");
        }
        for warning in &autostop.warnings {
            printer.line(format!("  warning        {warning}"));
        }
    }
}

fn print_cost_lines(cost: &CostReport, printer: &Printer) {
    if !cost.estimate.is_priced() {
        printer.line(format!(
            "  cost           not priced: {}",
            cost.estimate.notes.join(" ")
        ));
        printer.line(format!("  stops          {}", cost.autostop));
        return;
    }
    printer.line(format!(
        "  cost           ${:.2}/hour now ({} GPU node{}), ${:.2} spent over {:.1} hours",
        cost.per_hour,
        cost.nodes,
        if cost.nodes == 1 { "" } else { "s" },
        cost.spent,
        cost.hours
    ));
    printer.line(format!("  stops          {}", cost.autostop));
}

#[derive(Debug, Args)]
pub(crate) struct AutostopArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Scale the GPU nodes to zero after this long unused (e.g. 30m, 2h, 1h30m), or `off`; without it,
    /// the idle setting stays as it is.
    #[arg(value_name = "DURATION")]
    idle: Option<String>,
    /// Scale the GPU nodes to zero once the lab has spent this many US dollars since `up`, or `off`.
    #[arg(long, value_name = "DOLLARS")]
    budget: Option<String>,
}

/// `gpulab autostop 1h|off [--budget 25|off] [--name LAB]`: change (or, with nothing to change, show) what
/// stops the lab by itself.
pub(crate) async fn autostop(
    global: &GlobalArgs,
    args: &AutostopArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let status = if args.idle.is_none() && args.budget.is_none() {
        lab.status()
            .await?
            .autostop
            .ok_or_else(|| gpulab_core::Error::Cluster {
                message: "the lab's cluster cannot be reached to read the autostop agent's state"
                    .into(),
                hint: Some("`gpulab status` says why".into()),
                cause: None,
            })?
    } else {
        lab.set_autostop(args.idle.as_deref(), args.budget.as_deref())
            .await?
    };
    printer.line(format!(
        "Lab {} autostop: {}: {}",
        lab.spec().spec.name,
        status.settings.describe(),
        status.next
    ));
    for warning in &status.warnings {
        printer.line(format!("  warning: {warning}"));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Do not ask for confirmation (for scripts).
    #[arg(long, short)]
    yes: bool,
    /// With no record of the lab on this machine (made elsewhere, or the record lost): look for it in
    /// AWS by its tags, list what is found, and delete only what carries one lab's ID.
    #[arg(long)]
    find_by_tag: bool,
    /// The AWS region to search with --find-by-tag [env: AWS_REGION] [default: the settings' region].
    #[arg(long, requires = "find_by_tag")]
    region: Option<String>,
    /// Which lab to remove when --find-by-tag finds several labs of the name.
    #[arg(long, value_name = "ID", requires = "find_by_tag")]
    lab_id: Option<String>,
}

pub(crate) async fn down(
    global: &GlobalArgs,
    args: &DownArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let name = args.lab.resolve_name(global)?;
    // Before any cloud call: a refusal must not wait on credentials or the network.
    let lab_id = args
        .lab_id
        .as_deref()
        .map(LabId::parse)
        .transpose()
        .map_err(|problem| Error::Usage {
            message: format!("--lab-id: {problem}"),
            hint: "`gpulab down --find-by-tag` without --lab-id lists the IDs it finds".into(),
        })?;
    let lab = match Lab::find(&name, lab_options()).await? {
        Some(lab) => {
            if args.find_by_tag {
                printer.hint(format!(
                    "Lab {name} is recorded on this machine (ID {}): no search needed.",
                    lab.id()
                ));
            }
            if !args.yes {
                confirm(&name)?;
            }
            lab
        }
        None if !args.find_by_tag => {
            return Err(Error::Usage {
                message: format!(
                    "no lab named {name} on this machine; `down` deletes only what it can prove is the lab's"
                ),
                hint: format!(
                    "if the lab was made on another machine, or its record is lost, look for it by its tags: `gpulab down --name {name} --region REGION --find-by-tag`"
                ),
            });
        }
        None => match find_by_tag(global, args, &name, lab_id, printer).await? {
            Some(lab) => lab,
            None => return Ok(()),
        },
    };
    let progress = Progress::new(global.quiet);
    let report = lab.down(&progress).await;
    progress.finish();
    let report = report?;
    for thing in &report.left_alone {
        printer.hint(format!("Not this lab's, left alone: {thing}"));
    }
    if matches!(lab.provider(), Provider::Existing { .. }) {
        printer.line(format!(
            "Removed lab {name}'s Kubernetes objects (workspace pod, volume claim, secrets, namespace, device plugin); the cluster stays."
        ));
        return Ok(());
    }
    printer.line(format!(
        "Removed {} resource(s) of lab {name}.",
        report.deleted.len()
    ));
    if report.leftovers.is_empty() {
        printer.line("Nothing tagged with the lab's ID is left: it costs nothing any more.");
    } else {
        printer
            .line("Still there, and may cost money (remove by hand, or run `gpulab down` again):");
        for leftover in &report.leftovers {
            printer.line(format!("  - {leftover}"));
        }
    }
    Ok(())
}

/// `down --find-by-tag`: search AWS for the lab's resources by its name tag, show what was found (and
/// what has the name but is not gpulab's), choose the one lab ID to remove, and confirm. `None` when
/// there is nothing to remove.
async fn find_by_tag(
    global: &GlobalArgs,
    args: &DownArgs,
    name: &str,
    lab_id: Option<LabId>,
    printer: &Printer,
) -> gpulab_core::Result<Option<Lab>> {
    let mut spec_args = SpecArgs::default();
    spec_args.set_name(name);
    if let Some(region) = &args.region {
        spec_args.set_region(region);
    }
    let spec = spec_args.resolve(global)?.validate()?;
    let region = spec.spec.region.clone();
    let search = Lab::find_by_tag(&spec, &lab_options()).await?;
    for (id, resources) in &search.labs {
        printer.line(format!("Lab {name} with ID {id}, in {region}:"));
        for resource in resources {
            printer.line(format!("  - {resource}"));
        }
    }
    if !search.not_gpulab.is_empty() {
        printer.line("With the lab's names but no gpulab lab ID (never touched):");
        for resource in &search.not_gpulab {
            printer.line(format!("  - {resource}"));
        }
    }
    let ids: Vec<&LabId> = search.labs.iter().map(|(id, _)| id).collect();
    let id = match (lab_id, ids.as_slice()) {
        (Some(id), _) if ids.contains(&&id) => id,
        (Some(id), _) => {
            return Err(Error::Usage {
                message: format!("--lab-id {id}: no resource of lab {name} in {region} carries it"),
                hint: "the IDs found are listed above".into(),
            });
        }
        (None, []) => {
            printer.line(format!(
                "Nothing carrying a gpulab lab ID named {name} was found in {region}: nothing to delete."
            ));
            return Ok(None);
        }
        (None, [one]) => (*one).clone(),
        (None, several) => {
            let list: Vec<String> = several.iter().map(ToString::to_string).collect();
            return Err(Error::Usage {
                message: format!(
                    "{} labs named {name} were found in {region}: {}",
                    several.len(),
                    list.join(", ")
                ),
                hint: format!("choose one: `gpulab down --name {name} --find-by-tag --lab-id ID`"),
            });
        }
    };
    if !args.yes {
        confirm(name)?;
    }
    Lab::adopt(spec, id, lab_options()).await.map(Some)
}

fn confirm(name: &str) -> gpulab_core::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage {
            message: format!(
                "`down` deletes lab {name} and its /workspace volume, and there is no terminal to confirm on"
            ),
            hint: format!("`gpulab down --name {name} --yes`"),
        });
    }
    eprint!(
        "This deletes lab {name}, its cluster and its /workspace volume. Type the lab's name to confirm: "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::io("read the confirmation", e))?;
    if answer.trim() == name {
        Ok(())
    } else {
        Err(Error::Interrupted)
    }
}

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

pub(crate) fn ls(args: &LsArgs, printer: &Printer) -> gpulab_core::Result<()> {
    let gpulab_core::lab::LabListing { labs, unreadable } = Lab::list(&lab_options())?;
    // One unreadable lab does not hide the others: it is named on stderr, with what to do.
    for (_, error) in &unreadable {
        printer.error(error);
    }
    if args.output == Format::Json {
        printer.json(&labs);
        return Ok(());
    }
    if labs.is_empty() {
        printer.hint("No labs on this machine; `gpulab up` creates one.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = labs
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.region.clone(),
                l.instance_type.clone(),
                l.cost.nodes.to_string(),
                dollars(l.cost.estimate.is_priced().then_some(l.cost.per_hour), 2),
                dollars(l.cost.estimate.is_priced().then_some(l.cost.spent), 2),
                l.cost.autostop.clone(),
            ]
        })
        .collect();
    printer.line(table(
        &[
            "LAB",
            "REGION",
            "NODE TYPE",
            "NODES",
            "$/HOUR",
            "$ SPENT",
            "STOPS",
        ],
        &rows,
    ));
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct CostArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

pub(crate) async fn cost(
    global: &GlobalArgs,
    args: &CostArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let cost = lab.cost()?;
    if args.output == Format::Json {
        printer.json(&cost);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = cost
        .estimate
        .items
        .iter()
        .map(|i| vec![i.item.clone(), i.quantity.clone(), dollars(i.per_hour, 4)])
        .collect();
    printer.line(format!("Lab {}", lab.spec().spec.name));
    if !rows.is_empty() {
        printer.line(table(&["ITEM", "QUANTITY", "$/HOUR"], &rows));
    }
    print_cost_lines(&cost, printer);
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    lab: LabArg,
}

/// `stop` (desired 0) and `start` (the spec's desired count).
pub(crate) async fn scale(
    global: &GlobalArgs,
    args: &ScaleArgs,
    start: bool,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let desired = if start {
        lab.spec().spec.nodes.desired.max(1)
    } else {
        0
    };
    let progress = Progress::new(global.quiet);
    let result = lab.scale(desired, &progress).await;
    progress.finish();
    result?;
    let cost = lab.cost()?;
    match lab.provider() {
        gpulab_core::Provider::Aws => printer.line(format!(
            "Lab {} now has {desired} GPU node(s): ${:.2}/hour.",
            lab.spec().spec.name,
            cost.per_hour
        )),
        gpulab_core::Provider::Existing { .. } => printer.line(format!(
            "Lab {}'s workspace is {} (the cluster's nodes are its owner's to size).",
            lab.spec().spec.name,
            if desired == 0 {
                "stopped; /workspace is kept, and `gpulab start` brings it back"
            } else {
                "running again"
            }
        )),
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    lab: LabArg,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) async fn exec(global: &GlobalArgs, args: &ExecArgs) -> gpulab_core::Result<i32> {
    let lab = args.lab.load(global).await?;
    let request = ExecRequest {
        argv: args.command.clone(),
        ..Default::default()
    };
    let stdin = (!std::io::stdin().is_terminal()).then(|| Box::pin(tokio::io::stdin()) as _);
    let streams = ExecStreams {
        stdin,
        stdout: Box::pin(tokio::io::stdout()),
        stderr: Box::pin(tokio::io::stderr()),
    };
    Ok(lab.exec_streaming(request, streams).await?.shell_code())
}

/// How `cp` reaches the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Via {
    /// One source: one tar stream through the API server's exec, with SSH's paths and user; several
    /// sources or a workspace glob: SSH. Falls back to SSH when the workspace has no tar
    Auto,
    /// SFTP and tar over SSH, through the API server's port-forward to the pod's sshd
    Ssh,
    /// tar through the API server's exec, as `kubectl cp` does (relative paths from the container's
    /// working directory): for workspaces without sshd
    Kube,
}

/// What a copy does with symbolic links inside the directories it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LinksArg {
    /// Copy what a link to a file points to (as `scp -r`); skip links to directories.
    Follow,
    /// Copy links as links (as `tar`, `rsync -l` and `kubectl cp`).
    Keep,
}

impl From<LinksArg> for gpulab_core::remote::Links {
    fn from(links: LinksArg) -> Self {
        match links {
            LinksArg::Follow => gpulab_core::remote::Links::Follow,
            LinksArg::Keep => gpulab_core::remote::Links::Keep,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gpulab cp train.py data/ :/workspace/           upload a file and a directory
  gpulab cp ':/workspace/out/*.csv' ./results/     download what a quoted glob matches
  gpulab cp --via kube model.bin :/workspace/      through the API server, without sshd

Copies keep permissions and modification times, and are atomic: a failed copy never leaves a truncated \
file at the target name. A directory goes as one tar stream when the workspace has tar, else file by \
file over SFTP. The summary says which way the copy went.")]
pub(crate) struct CpArgs {
    #[command(flatten)]
    lab: LabArg,
    /// How to reach the workspace.
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    via: Via,
    /// Symbolic links inside directories: copy what they point to, or the links themselves.
    #[arg(long, value_enum, default_value_t = LinksArg::Follow)]
    links: LinksArg,
    /// What to copy: local paths, or `:PATH`s in the workspace (e.g. `:/workspace/out.txt`), all on one
    /// side. Globs (`*`, `?`, `[...]`) are expanded on their side, quoted ones by gpulab.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// Where to: a local path, or `:PATH` in the workspace; a directory when there are several sources.
    #[arg(value_name = "TARGET")]
    target: String,
}

/// `gpulab cp SOURCE... TARGET`: [`Lab::copy`], with progress and a summary.
pub(crate) async fn cp(
    global: &GlobalArgs,
    args: &CpArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    use gpulab_core::remote::CopyOptions;
    use gpulab_core::remote::copy::{CopyPlan, Via as CoreVia};

    // Bad input is an error before the lab is even loaded.
    CopyPlan::parse(&args.sources, &args.target)?;
    let lab = args.lab.load(global).await?;
    gpulab_core::profile::mark("lab loaded");
    let via = match args.via {
        Via::Auto => CoreVia::Auto,
        Via::Ssh => CoreVia::Ssh,
        Via::Kube => CoreVia::Kube,
    };
    let options = CopyOptions {
        links: args.links.into(),
        ..Default::default()
    };
    let progress = Progress::new(global.quiet);
    let result = lab
        .copy(&args.sources, &args.target, via, &options, &progress)
        .await;
    progress.finish();
    gpulab_core::profile::mark("copy done");
    let report = match result {
        Ok(report) => report,
        Err(failed) => {
            if failed.done.stats.files > 0 {
                printer.hint(format!(
                    "copied {} file(s) before the error; rerunning copies them again",
                    failed.done.stats.files
                ));
            }
            return Err(failed.error);
        }
    };
    let secs = report.stats.elapsed.as_secs_f64().max(1e-3);
    let mib = report.stats.bytes as f64 / 1048576.0;
    let way = match report.via {
        Some(CoreVia::Kube) => " through the API server's exec",
        Some(CoreVia::Ssh) => " over SSH",
        Some(CoreVia::Auto) | None => "",
    };
    printer.hint(format!(
        "copied {} file(s), {mib:.1} MiB in {secs:.1}s ({:.0} MiB/s){way}",
        report.stats.files,
        mib / secs
    ));
    Ok(())
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gpulab sync . :/workspace/project               send what changed since the last sync
  gpulab sync --delete --dry-run . :/workspace/p  list what a mirror would send and remove
  gpulab sync :/workspace/out ./out               bring results back

A file is sent when the other side lacks it or its size or modification time differ (--checksum: its \
SHA-256). The source's .gitignore files apply, and so does every --exclude; excluded files on the target \
are never removed.")]
pub(crate) struct SyncArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Remove from the target what the source does not hold.
    #[arg(long)]
    delete: bool,
    /// Only list what would be sent and removed.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Compare files of the same size by SHA-256, not by modification time.
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Leave out what matches PATTERN (.gitignore syntax, from the synced root); repeatable.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Do not read the source's .gitignore files.
    #[arg(long)]
    no_gitignore: bool,
    /// Symbolic links inside the tree: follow them, or sync the links themselves.
    #[arg(long, value_enum, default_value_t = LinksArg::Follow)]
    links: LinksArg,
    /// The directory to mirror: a local path, or `:PATH` in the workspace.
    #[arg(value_name = "SOURCE")]
    source: String,
    /// The directory to make like it, on the other side (created if missing).
    #[arg(value_name = "TARGET")]
    target: String,
}

/// `gpulab sync SOURCE TARGET`: [`Lab::sync`], then what it sent and removed.
pub(crate) async fn sync(
    global: &GlobalArgs,
    args: &SyncArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    use gpulab_core::remote::sync::{SyncDirection, SyncOptions};
    let direction = SyncDirection::parse(&args.source, &args.target)?;
    let options = SyncOptions {
        checksum: args.checksum,
        delete: args.delete,
        dry_run: args.dry_run,
        exclude: args.exclude.clone(),
        no_gitignore: args.no_gitignore,
        links: args.links.into(),
    };
    let lab = args.lab.load(global).await?;
    let progress = Progress::new(global.quiet);
    let result = lab.sync(&direction, &options, &progress).await;
    progress.finish();
    let report = result?;
    let verb = |done: &str, would: &str| {
        if report.dry_run {
            would.to_string()
        } else {
            done.to_string()
        }
    };
    for rel in &report.sent {
        printer.line(format!("{} {rel}", verb("sent", "would send")));
    }
    for rel in &report.deleted {
        printer.line(format!("{} {rel}", verb("deleted", "would delete")));
    }
    printer.hint(format!(
        "{} {} file(s) ({:.1} MiB), {} {}, {} up to date, in {:.2}s",
        verb("sent", "would send"),
        report.sent.len(),
        report.bytes as f64 / 1048576.0,
        verb("deleted", "would delete"),
        report.deleted.len(),
        report.listed as usize - report.sent.len().min(report.listed as usize),
        report.elapsed.as_secs_f64()
    ));
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The lab whose EKS token to print (kubeconfigs gpulab writes call `gpulab token --lab NAME`).
    #[arg(long)]
    lab: String,
}

/// Print an ExecCredential for kubectl: the EKS token, made in-process.
pub(crate) async fn token(args: &TokenArgs, printer: &Printer) -> gpulab_core::Result<()> {
    let lab = Lab::load(&args.lab, lab_options()).await?;
    printer.line(lab.token().await?);
    Ok(())
}
