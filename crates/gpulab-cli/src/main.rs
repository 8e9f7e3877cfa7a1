//! `gpulab`: GPU development labs on AWS EKS or any Kubernetes cluster, for humans. A thin frontend:
//! clap definitions, one file per command, one printer. The work happens in gpulab-core.

mod args;
mod commands;
mod printer;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.global.quiet);
    let result = match cli.command {
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
            // 2 for bad input, as clap does for bad flags; 1 for everything else.
            ExitCode::from(if error.is_usage() { 2 } else { 1 })
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
