//! `gpulab`: GPU development labs on AWS EKS or any Kubernetes cluster, for humans. A thin frontend:
//! clap definitions, one file per command, one printer. The work happens in gpulab-core.

mod args;
mod commands;
mod printer;
mod progress;
mod terminal;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::args::GlobalArgs;
use crate::printer::Printer;

/// GPU development labs on AWS EKS or any Kubernetes cluster: one command to a working GPU pod,
/// private by default, its bill always in view, nothing left behind.
#[derive(Debug, Parser)]
#[command(
    name = "gpulab",
    version,
    propagate_version = true,
    max_term_width = 110
)]
#[command(
    after_help = "Settings come from, each overriding the one before: built-in defaults, gpulab.toml in \
~/.config/gpulab/ then in the working directory, the environment (CLUSTER_NAME, AWS_REGION, NODE_TYPE, \
MIN_NODES, MAX_NODES, DESIRED_NODES, POD_NAME, SSH_KEY), and flags. `gpulab config show` says which won."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show everything `up` would create and what it would cost; needs no AWS account.
    Plan(commands::plan::PlanArgs),
    /// Create the lab (or finish creating it): cluster, GPU nodes, device plugin, workspace pod.
    Up(commands::lab::UpArgs),
    /// Show the cluster, nodes, device plugin, workspace and what the lab costs.
    Status(commands::lab::StatusArgs),
    /// Delete everything the lab made, then list anything still tagged with it.
    Down(commands::lab::DownArgs),
    /// List the labs on this machine, with their cost.
    Ls(commands::lab::LsArgs),
    /// What the lab costs per hour now, and has cost since `up`.
    Cost(commands::lab::CostArgs),
    /// Scale the GPU nodes to zero: stops the GPU bill, keeps the cluster and /workspace.
    Stop(commands::lab::ScaleArgs),
    /// Scale the GPU nodes back up after `stop`.
    Start(commands::lab::ScaleArgs),
    /// Stop the lab by itself when unused or over budget, from inside the cluster: `gpulab autostop
    /// 30m`, `off`, `--budget 25`; with no setting, show what it will do next.
    Autostop(commands::lab::AutostopArgs),
    /// A shell in the workspace over SSH through the API server, or `gpulab ssh -- CMD` for one command.
    Ssh(commands::access::SshArgs),
    /// Write a Host block for plain ssh, scp, rsync and VS Code (`ssh gpulab-LAB`).
    SshConfig(commands::access::SshConfigArgs),
    /// Bridge stdin/stdout to the workspace's sshd (the ProxyCommand of `gpulab ssh-config`).
    #[command(hide = true)]
    Proxy(commands::access::ProxyArgs),
    /// Forward a workspace port to localhost, e.g. `gpulab forward 8000` for vLLM.
    Forward(commands::access::ForwardArgs),
    /// Forward Jupyter to localhost and print its URL with the token.
    Jupyter(commands::access::JupyterArgs),
    /// Run a command in the workspace, e.g. `gpulab exec -- nvidia-smi`.
    Exec(commands::lab::ExecArgs),
    /// Validate the GPUs: nvidia-smi, PyTorch matmul and memory bandwidth against the datasheet, NCCL, vLLM.
    Test(commands::test::TestArgs),
    /// vLLM in the workspace: `serve MODEL` (OpenAI-compatible API on localhost), `bench`, `stop`, `logs`.
    #[command(subcommand)]
    Vllm(commands::vllm::VllmCommand),
    /// Slurm in the workspace: `setup` from its GPUs, then `run -- CMD` to submit jobs.
    #[command(subcommand)]
    Slurm(commands::slurm::SlurmCommand),
    /// The workspace image: `dockerfile` prints it, `build` builds it and pushes it to ECR for `up --image`.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Copy files to or from the workspace: `gpulab cp train.py :/workspace/`.
    Cp(commands::lab::CpArgs),
    /// Mirror a directory to or from the workspace, sending only what changed: `gpulab sync . :/workspace/p`.
    Sync(commands::lab::SyncArgs),
    /// Print an EKS token for kubectl (the kubeconfig gpulab writes calls this).
    #[command(hide = true)]
    Token(commands::lab::TokenArgs),
    /// List the GPU instance types gpulab knows, with their GPUs and prices.
    Catalog(commands::catalog::CatalogArgs),
    /// Inspect the lab's settings.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Print a shell completion script, e.g. `gpulab completions bash > /etc/bash_completion.d/gpulab`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Run `work` on a fresh runtime, then drop the runtime without waiting for its blocking threads: a
/// read of our stdin that the command never needed would otherwise keep the process alive.
fn block_on<F: Future>(work: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    let output = runtime.block_on(work);
    runtime.shutdown_background();
    output
}

fn main() -> ExitCode {
    gpulab_core::profile::mark("main");
    let cli = Cli::parse();
    let printer = Printer::new(cli.global.quiet);
    let global = &cli.global;
    let result = match cli.command {
        Command::Up(args) => block_on(commands::lab::up(global, &args, &printer)),
        Command::Status(args) => block_on(commands::lab::status(global, &args, &printer)),
        Command::Down(args) => block_on(commands::lab::down(global, &args, &printer)),
        Command::Ls(args) => commands::lab::ls(&args, &printer),
        Command::Cost(args) => block_on(commands::lab::cost(global, &args, &printer)),
        Command::Stop(args) => block_on(commands::lab::scale(global, &args, false, &printer)),
        Command::Start(args) => block_on(commands::lab::scale(global, &args, true, &printer)),
        Command::Autostop(args) => block_on(commands::lab::autostop(global, &args, &printer)),
        Command::Exec(args) => match block_on(commands::lab::exec(global, &args)) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Command::Test(args) => match block_on(commands::test::test(global, &args, &printer)) {
            Ok(code) => return ExitCode::from(code as u8),
            Err(e) => Err(e),
        },
        Command::Vllm(command) => match block_on(commands::vllm::run(global, &command, &printer)) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Command::Slurm(command) => {
            match block_on(commands::slurm::run(global, &command, &printer)) {
                Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => Err(e),
            }
        }
        Command::Image(command) => block_on(commands::image::run(global, &command, &printer)),
        // The terminal's stdin may stay blocked in a read after the session: exit without waiting.
        Command::Ssh(args) => match block_on(commands::access::ssh(global, &args)) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Command::Proxy(args) => match block_on(commands::access::proxy(global, &args)) {
            Ok(()) => std::process::exit(0),
            Err(e) => Err(e),
        },
        Command::SshConfig(args) => block_on(commands::access::ssh_config(global, &args, &printer)),
        Command::Forward(args) => block_on(commands::access::forward(global, &args, &printer)),
        Command::Jupyter(args) => block_on(commands::access::jupyter(global, &args, &printer)),
        Command::Cp(args) => block_on(commands::lab::cp(global, &args, &printer)),
        Command::Sync(args) => block_on(commands::lab::sync(global, &args, &printer)),
        Command::Token(args) => block_on(commands::lab::token(&args, &printer)),
        Command::Plan(args) => commands::plan::run(&cli.global, &args, &printer),
        Command::Catalog(args) => commands::catalog::run(&cli.global, &args, &printer),
        Command::Config(command) => commands::config::run(&cli.global, &command, &printer),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gpulab", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            printer.error(&error);
            // 2 for bad input, as clap does for bad flags; 130 for Ctrl-C, as shells do; 1 otherwise.
            ExitCode::from(match error {
                gpulab_core::Error::Interrupted => 130,
                ref e if e.is_usage() => 2,
                _ => 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
