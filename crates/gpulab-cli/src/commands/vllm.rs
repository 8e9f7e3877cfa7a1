//! `gpulab vllm serve | bench | stop | logs`: vLLM's OpenAI-compatible server in the workspace, sized
//! for the lab's GPUs, reached through a port-forward (the server listens on the pod's loopback only).

use std::time::Duration;

use clap::{Args, Subcommand};
use gpulab_core::vllm::{self, BenchOptions, BenchReport};

use super::access::forward_until_interrupted;
use super::lab::{Format, LabArg};
use crate::args::GlobalArgs;
use crate::printer::{Printer, table};

/// The vLLM commands.
#[derive(Debug, Subcommand)]
pub(crate) enum VllmCommand {
    /// Start `vllm serve MODEL` in the workspace with settings that suit its GPUs, wait until it
    /// answers, and forward its port to localhost until Ctrl-C (the server keeps running).
    Serve(ServeArgs),
    /// Measure the running server's throughput: output tokens/s, requests/s, latency.
    Bench(BenchArgs),
    /// Stop the server `serve` started.
    Stop(StopArgs),
    /// Print the end of the server's log.
    Logs(LogsArgs),
}

/// `gpulab vllm serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Hugging Face model id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or a path in the workspace.
    model: String,
    /// The server's port in the pod.
    #[arg(long, default_value_t = vllm::DEFAULT_PORT)]
    port: u16,
    /// The local port to forward to [default: --port].
    #[arg(long, value_name = "PORT")]
    local: Option<u16>,
    /// Longest context, in tokens [default: from the GPUs' memory, capped at the model's own].
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(128..))]
    max_model_len: Option<u32>,
    /// Share of each GPU's memory vLLM may take, above 0 and at most 1 [default: 0.85 on 16 GiB GPUs, else 0.90].
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    gpu_memory_utilization: Option<f64>,
    /// Weights' dtype, as vLLM's `--dtype` [default: half on GPUs without bf16, else auto].
    #[arg(long, value_parser = ["auto", "half", "float16", "bfloat16", "float", "float32"])]
    dtype: Option<String>,
    /// Start the server and return: no waiting, no port-forward.
    #[arg(long)]
    detach: bool,
    /// How long to wait for the server to answer, in seconds (a first start downloads the model).
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    timeout: u64,
    /// More arguments for `vllm serve` (after `--`).
    #[arg(last = true, value_name = "VLLM_ARGS")]
    extra: Vec<String>,
}

/// A number in (0, 1].
fn fraction(value: &str) -> Result<f64, String> {
    let fraction: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if fraction > 0.0 && fraction <= 1.0 {
        Ok(fraction)
    } else {
        Err("must be above 0 and at most 1, e.g. 0.9".into())
    }
}

/// `gpulab vllm bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    lab: LabArg,
    /// The server's port in the pod.
    #[arg(long, default_value_t = vllm::DEFAULT_PORT)]
    port: u16,
    /// Requests in all.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Output tokens per request.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    /// The prompt [default: the benchmark's own].
    #[arg(long)]
    prompt: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// `gpulab vllm stop`.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    lab: LabArg,
}

/// `gpulab vllm logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    lab: LabArg,
    /// Lines from the end.
    #[arg(long, short = 'n', default_value_t = 50)]
    lines: u32,
}

/// Run a vLLM command; the exit code is 1 when a benchmark had failed requests.
pub(crate) async fn run(
    global: &GlobalArgs,
    command: &VllmCommand,
    printer: &Printer,
) -> gpulab_core::Result<i32> {
    match command {
        VllmCommand::Serve(args) => serve(global, args, printer).await.map(|()| 0),
        VllmCommand::Bench(args) => bench(global, args, printer).await,
        VllmCommand::Stop(args) => {
            let lab = args.lab.load(global).await?;
            let stopped = lab.vllm_stop().await?;
            printer.line(if stopped {
                "vLLM stopped."
            } else {
                "No vLLM server was running."
            });
            Ok(0)
        }
        VllmCommand::Logs(args) => {
            let lab = args.lab.load(global).await?;
            let log = lab.vllm_log(args.lines).await?;
            if log.trim().is_empty() {
                printer.hint(format!(
                    "No vLLM log yet ({}); `gpulab vllm serve MODEL` starts the server.",
                    vllm::LOG_FILE
                ));
            } else {
                printer.line(log.trim_end());
            }
            Ok(0)
        }
    }
}

async fn serve(
    global: &GlobalArgs,
    args: &ServeArgs,
    printer: &Printer,
) -> gpulab_core::Result<()> {
    let lab = args.lab.load(global).await?;
    let mut config = lab.vllm_config(&args.model);
    config.port = args.port;
    if let Some(len) = args.max_model_len {
        config.max_model_len = len;
    }
    if let Some(share) = args.gpu_memory_utilization {
        config.gpu_memory_utilization = share;
    }
    if let Some(dtype) = &args.dtype {
        config.dtype = dtype.clone();
    }
    config.extra_args = args.extra.clone();
    printer.hint(format!("Starting: {}", config.argv().join(" ")));
    let wait = (!args.detach).then(|| Duration::from_secs(args.timeout));
    if wait.is_some() {
        printer.hint(format!(
            "Waiting for it to answer (a first start downloads the model; `gpulab vllm logs --name {}` shows its log)…",
            lab.spec().spec.name
        ));
    }
    let server = tokio::select! {
        server = lab.vllm_serve(&config, wait) => server?,
        _ = tokio::signal::ctrl_c() => return Err(gpulab_core::Error::Interrupted),
    };
    let how = if server.started {
        "started"
    } else {
        "already running"
    };
    printer.hint(format!(
        "vLLM {how} (pid {}, log {}).",
        server.pid, server.log_file
    ));
    if args.detach {
        printer.hint(format!(
            "Reach it with `gpulab forward {}`; stop it with `gpulab vllm stop`.",
            config.port
        ));
        return Ok(());
    }
    let say =
        "OpenAI-compatible API at http://{addr}/v1 (e.g. curl http://{addr}/v1/models)".into();
    forward_until_interrupted(
        &lab,
        config.port,
        args.local.unwrap_or(config.port),
        global,
        say,
        printer,
    )
    .await?;
    printer.hint("The server keeps running in the workspace; `gpulab vllm stop` stops it.");
    Ok(())
}

async fn bench(
    global: &GlobalArgs,
    args: &BenchArgs,
    printer: &Printer,
) -> gpulab_core::Result<i32> {
    let lab = args.lab.load(global).await?;
    let options = BenchOptions {
        url: format!("http://127.0.0.1:{}", args.port),
        requests: args.requests,
        concurrency: args.concurrency,
        max_tokens: args.max_tokens,
        prompt: args.prompt.clone(),
        ..Default::default()
    };
    let report = lab.vllm_bench(&options).await?;
    match args.output {
        Format::Json => printer.json(&report),
        Format::Table => printer.line(bench_table(&report)),
    }
    Ok(if report.error.is_none() && report.failed == 0 {
        0
    } else {
        1
    })
}

fn bench_table(report: &BenchReport) -> String {
    let seconds = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.2} s"));
    let mut rows = vec![
        vec!["server".into(), report.url.clone()],
        vec!["model".into(), report.model.clone().unwrap_or("-".into())],
        vec![
            "requests".into(),
            format!(
                "{} sent, {} at a time, {} completed, {} failed",
                report.requests, report.concurrency, report.completed, report.failed
            ),
        ],
        vec![
            "throughput".into(),
            format!(
                "{:.1} output tokens/s, {:.2} requests/s over {:.1} s",
                report.output_tokens_per_s, report.requests_per_s, report.elapsed_s
            ),
        ],
        vec![
            "latency".into(),
            format!(
                "p50 {}, p90 {}",
                seconds(report.latency_p50_s),
                seconds(report.latency_p90_s)
            ),
        ],
    ];
    if let Some(error) = &report.error {
        rows.push(vec!["error".into(), error.clone()]);
    }
    for error in &report.errors {
        rows.push(vec!["request error".into(), error.clone()]);
    }
    table(&["VLLM BENCH", ""], &rows)
}
