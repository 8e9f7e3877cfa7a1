//! `gpulab slurm setup | run`: a one-node Slurm in the workspace, configured from the GPUs, CPUs and
//! memory found there, and jobs submitted to it with their output streamed.

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use gpulab_core::remote::ExecStreams;
use gpulab_core::slurm::{SetupOptions, SlurmSetup, SrunOptions};

use super::lab::{Format, LabArg};
use crate::args::GlobalArgs;
use crate::printer::{Printer, table};

/// The Slurm commands.
#[derive(Debug, Subcommand)]
pub(crate) enum SlurmCommand {
    /// Write slurm.conf and gres.conf from the workspace's GPUs, CPUs and memory, set up munge, start
    /// slurmctld and slurmd, and verify with `sinfo` and a one-GPU `srun`.
    Setup(SetupArgs),
    /// Submit a job with `srun` and stream its output: `gpulab slurm run --gpus 1 -- python train.py`.
    Run(RunArgs),
}

/// `gpulab slurm setup`.
#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Fail instead of installing slurm-wlm and munge when the image lacks them.
    #[arg(long)]
    no_install: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `gpulab slurm run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    lab: LabArg,
    /// GPUs for the job (`--gres=gpu:N`); 0 for none.
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// CPUs per task.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// The job's name.
    #[arg(long, default_value = "gpulab")]
    job_name: String,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Run a Slurm command; its exit code is the job's, or 1 when setup's verification failed.
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &SlurmCommand,
    printer: &Printer,
) -> gpulab_core::Result<i32> {
    match command {
        SlurmCommand::Setup(args) => {
            let lab = args.lab.load(global).await?;
            let options = SetupOptions {
                install_missing: !args.no_install,
                ..Default::default()
            };
            printer.hint("Setting up Slurm in the workspace (an install takes a minute or two)…");
            let setup = lab.slurm_setup(&options).await?;
            match args.output {
                Format::Json => printer.json(&setup),
                Format::Table => print_setup(&setup, printer),
            }
            Ok(if setup.verification.ok() { 0 } else { 1 })
        }
        SlurmCommand::Run(args) => {
            let lab = args.lab.load(global).await?;
            let options = SrunOptions {
                gpus: args.gpus,
                cpus: args.cpus,
                job_name: args.job_name.clone(),
            };
            let stdin =
                (!std::io::stdin().is_terminal()).then(|| Box::pin(tokio::io::stdin()) as _);
            let streams = ExecStreams {
                stdin,
                stdout: Box::pin(tokio::io::stdout()),
                stderr: Box::pin(tokio::io::stderr()),
            };
            Ok(lab
                .slurm_run(&args.command, &options, streams)
                .await?
                .shell_code())
        }
    }
}

fn print_setup(setup: &SlurmSetup, printer: &Printer) {
    let r = &setup.resources;
    printer.line(format!(
        "Slurm on {}: {} CPUs, {} MiB, {} GPU{}",
        r.hostname,
        r.cpus,
        setup.resources.real_memory_mib(),
        r.gpu_count(),
        if r.gpu_count() == 1 { "" } else { "s" }
    ));
    let rows: Vec<Vec<String>> = setup
        .verification
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.state.clone(),
                n.cpus.to_string(),
                n.memory_mib.to_string(),
                n.gres.clone(),
            ]
        })
        .collect();
    printer.line(table(
        &["NODE", "STATE", "CPUS", "MEMORY MIB", "GRES"],
        &rows,
    ));
    let verdict = if setup.verification.srun_ok {
        "ran"
    } else {
        "FAILED"
    };
    printer.line(format!(
        "  srun --gres=gpu:1 nvidia-smi -L {verdict}: {}",
        setup.verification.srun_output
    ));
    if !setup.verification.ok() {
        printer.hint(
            "Slurm did not verify: `gpulab exec -- tail /var/log/slurm/slurmd.log` shows why; rerun `gpulab slurm setup` to restart it.",
        );
    }
}
