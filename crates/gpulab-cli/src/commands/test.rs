//! `gpulab test`: the GPU validation suite, in a lab's workspace or (`--local`) on this machine.

use clap::Args;
use gpulab_core::Lab;
use gpulab_core::checks::{CheckOptions, GpuReport};

use crate::args::GlobalArgs;
use crate::commands::lab::{Format, LabArg};
use crate::printer::{Printer, table};

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Check this machine's GPUs instead of a lab's: no lab, no cluster; the GPU model comes from
    /// nvidia-smi and is judged by its datasheet in gpulab's catalog.
    #[arg(long, conflicts_with = "name")]
    local: bool,
    /// The Python with PyTorch (and vLLM) to run the checks with [default: in a lab, the workspace's
    /// venv, else python3; with --local, python3 on the PATH].
    #[arg(long, value_name = "PATH")]
    python: Option<String>,
    /// Skip the vLLM smoke test (it downloads a small model).
    #[arg(long)]
    no_vllm: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `gpulab test`: the GPU validation suite; the exit code is 1 when a check fails or is unavailable.
pub(crate) async fn test(
    global: &GlobalArgs,
    args: &TestArgs,
    printer: &Printer,
) -> gpulab_core::Result<i32> {
    let mut options = CheckOptions::default();
    if args.no_vllm {
        options.vllm_model = None;
    }
    // With --local the interpreter is this machine's (checked here); in a lab, the workspace's.
    options.python = args.python.clone();
    let report = if args.local {
        Lab::test_local(&options).await?
    } else {
        args.lab.load(global).await?.test_gpu(&options).await?
    };
    print(&report, args.output, printer);
    Ok(if report.passed() { 0 } else { 1 })
}

/// The report as a table (with, for people, what a low figure usually means) or as JSON.
fn print(report: &GpuReport, output: Format, printer: &Printer) {
    match output {
        Format::Json => printer.json(report),
        Format::Table => {
            let rows: Vec<Vec<String>> = report
                .rows()
                .into_iter()
                .map(|(a, b, c)| vec![a, b, c])
                .collect();
            printer.line(table(&["CHECK", "RESULT", "DETAIL"], &rows));
            let explanations = report.explanations();
            if !explanations.is_empty() {
                printer.hint(format!("\n{}", explanations.join("\n")));
            }
        }
    }
}
