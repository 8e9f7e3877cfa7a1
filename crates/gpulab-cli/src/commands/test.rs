//! `gpulab test`: the GPU validation suite, in a lab's workspace or (`--local`) on this machine.

use clap::Args;
use gpulab_core::Error;
use gpulab_core::checks::{CheckOptions, GpuReport, resolve_python, run_local_gpu_checks};

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
    let report = if args.local {
        if let Some(python) = &args.python {
            let path = resolve_python(python).map_err(|problem| Error::Usage {
                message: format!("--python {python}: {problem}"),
                hint: "give the Python that has PyTorch, e.g. --python /opt/conda/bin/python3 \
                       or --python .venv/bin/python (`which python3` shows the one on the PATH)"
                    .into(),
            })?;
            options.python = Some(path.display().to_string());
        }
        run_local_gpu_checks(&options).await?
    } else {
        // In a lab the interpreter is the workspace's, so it is looked up there, not here.
        options.python = args.python.clone();
        let lab = args.lab.load(global).await?;
        lab.test_gpu(&options).await?
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
