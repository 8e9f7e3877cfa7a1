//! The GPU validation suite behind `gpulab test`, `gpulab test --local` and `Lab::test_gpu`.
//!
//! gpulab ships its own Python scripts (embedded in the binary, piped to `python -` through
//! [`RemoteExec::exec`]'s standard input; the machine need not have them). The same scripts run in a
//! lab's workspace ([`run_gpu_checks`], over the API server or SSH) and on the machine gpulab runs on
//! ([`run_local_gpu_checks`], through [`LocalExec`](crate::remote::local::LocalExec)). Each prints one
//! line `GPULAB_JSON <document>`:
//!
//! - `nvidia_smi.py`: nvidia-smi's GPU list (`--query-gpu` CSV) and summary, parsed here into the driver
//!   and CUDA versions and each GPU's name, memory, UUID and PCI bus id; each GPU's clocks, power,
//!   temperature, throttle reasons, MIG and compute mode at rest; the processes using the GPUs;
//! - `torch_bench.py`: whether PyTorch sees CUDA, each device, and per device a matmul benchmark (fp16,
//!   bf16 on Ampere and newer, fp32 without TF32; a warm-up, CUDA-event timing, the median of the
//!   repeats of at least 100 ms each; the size is the largest of 16384/8192/4096 that fits a quarter of
//!   the free memory and takes at most 0.2 s per product) and a device-to-device copy bandwidth test
//!   (1 GiB, read + write), each with nvidia-smi's clocks, power and throttle reasons sampled every
//!   100 ms while it ran ([`Telemetry`]);
//! - `nccl.py`: with two or more GPUs, an NCCL all-reduce (256 MiB of fp32, one process per GPU through
//!   `torch.distributed`), checked for the right sum, reported as algorithm and bus bandwidth;
//! - `vllm_smoke.py`: load a small model (default `facebook/opt-125m`) in vLLM, generate, report output
//!   tokens per second; a model that cannot be downloaded is its own outcome,
//!   [`CheckStatus::ModelUnavailable`].
//!
//! # What the figures are judged against
//!
//! Each measurement is reported as a fraction of its datasheet peak (the catalog's [`GpuModel`]: the
//! lab's instance type's GPU, or on this machine the model nvidia-smi and PyTorch name, see
//! [`catalog::identify_gpu`](crate::catalog::identify_gpu)), and passes when that fraction reaches the
//! GPU's threshold ([`Thresholds::for_gpu`], where the fractions and the reasons for them are set out).
//! A GPU the catalog does not have (a GeForce card, an H100 PCIe) is measured but not judged:
//! [`CheckStatus::Measured`].
//!
//! A check whose tool is missing (no nvidia-smi, no PyTorch, no CUDA, no vLLM) is
//! [`CheckStatus::Unavailable`] with the reason, and counts as a failure: a report never passes without
//! the measurements.

mod local;
mod smi;
mod verdict;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::catalog::InstanceType;
use crate::remote::{ExecRequest, RemoteExec};

pub use local::{find_python, resolve_python, run_local_gpu_checks};
pub use smi::{
    QUERY_FIELDS, STATE_FIELDS, SmiGpu, SmiInfo, SmiProcess, SmiState, parse as parse_nvidia_smi,
    parse_list as parse_nvidia_smi_list, parse_processes as parse_nvidia_smi_processes,
    parse_state as parse_nvidia_smi_state, throttle_reason_names,
};
pub use verdict::{Reference, Thresholds, supports_bf16};

#[cfg(doc)]
use crate::catalog::GpuModel;

/// The nvidia-smi script, as shipped into the workspace.
pub const NVIDIA_SMI_SCRIPT: &str = include_str!("scripts/nvidia_smi.py");
/// The PyTorch matmul and bandwidth script.
pub const TORCH_SCRIPT: &str = include_str!("scripts/torch_bench.py");
/// The NCCL all-reduce script.
pub const NCCL_SCRIPT: &str = include_str!("scripts/nccl.py");
/// The vLLM smoke test script.
pub const VLLM_SCRIPT: &str = include_str!("scripts/vllm_smoke.py");

/// The model the vLLM smoke test loads unless told otherwise (125M parameters, a 250 MB download).
pub const DEFAULT_VLLM_MODEL: &str = "facebook/opt-125m";

/// The prefix of the line that carries a script's JSON document.
const JSON_PREFIX: &str = "GPULAB_JSON ";

/// Shell that picks the workspace's Python (the lab's venv, else `python3`) and runs the script on stdin.
const PYTHON_LAUNCHER: &str = "if [ -x /workspace/.venv/bin/python ]; then PY=/workspace/.venv/bin/python; \
elif command -v python3 >/dev/null 2>&1; then PY=python3; \
else echo 'gpulab: no python3 in the workspace' >&2; exit 127; fi; exec \"$PY\" -";

/// What `run_gpu_checks` runs, and how strictly it judges.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// GPUs that should be visible; `None` means every GPU of the instance (in a lab) or every GPU
    /// PyTorch sees (on this machine).
    pub expected_gpus: Option<u32>,
    /// Timed repeats per benchmark (the median is reported); at least 3.
    pub repeats: u32,
    /// Run the NCCL all-reduce when there are two or more GPUs.
    pub nccl: bool,
    /// The model for the vLLM smoke test; `None` skips it.
    pub vllm_model: Option<String>,
    /// Pass fractions; `None` uses [`Thresholds::for_gpu`].
    pub thresholds: Option<Thresholds>,
    /// The Python (with PyTorch, and vLLM for its test) that runs the scripts: a path, or a name looked
    /// up on the PATH where the scripts run. `None`: in a workspace, its venv's Python, else `python3`;
    /// on this machine, [`find_python`].
    pub python: Option<String>,
    /// Time limit for each of the nvidia-smi, PyTorch and NCCL scripts.
    pub script_timeout: Duration,
    /// Time limit for the vLLM smoke test (a download and a model load).
    pub vllm_timeout: Duration,
    /// Extra environment for every script: `HF_TOKEN` for a gated model, `HF_ENDPOINT` for a mirror,
    /// `HF_HUB_OFFLINE=1` to use only the cache, `CUDA_VISIBLE_DEVICES`.
    pub env: Vec<(String, String)>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            expected_gpus: None,
            repeats: 10,
            nccl: true,
            vllm_model: Some(DEFAULT_VLLM_MODEL.into()),
            thresholds: None,
            python: None,
            script_timeout: Duration::from_secs(600),
            vllm_timeout: Duration::from_secs(900),
            env: Vec::new(),
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// It ran and met its threshold.
    Pass,
    /// It ran and fell short, or errored.
    Fail,
    /// Its tool is missing (no nvidia-smi, PyTorch, CUDA or vLLM): a failure, with the reason.
    Unavailable,
    /// Not applicable here (bf16 on a pre-Ampere GPU, all-reduce with one GPU) or turned off.
    Skipped,
    /// The vLLM smoke test could not download its model (no network and no cached copy); says nothing
    /// about the GPU, so it does not fail the report.
    ModelUnavailable,
    /// It ran, but the catalog has no datasheet figure for this GPU (a GeForce card, an H100 PCIe), so
    /// the figure is reported and not judged; it does not fail the report.
    Measured,
}

impl CheckStatus {
    /// True for the outcomes that fail the report: [`Fail`](Self::Fail) and
    /// [`Unavailable`](Self::Unavailable).
    pub fn is_failure(self) -> bool {
        matches!(self, CheckStatus::Fail | CheckStatus::Unavailable)
    }

    /// The word a table shows.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Unavailable => "UNAVAILABLE",
            CheckStatus::Skipped => "skipped",
            CheckStatus::ModelUnavailable => "no model",
            CheckStatus::Measured => "measured",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. "matmul fp16 gpu0".
    pub name: String,
    /// How it ended.
    pub status: CheckStatus,
    /// The figures or the reason, in words: what was measured, the datasheet peak, the fraction and
    /// what passes, and the clocks, power and throttle reasons while it ran.
    pub detail: String,
    /// The measured figure, for benchmarks.
    pub measured: Option<f64>,
    /// The datasheet figure it was compared with.
    pub expected: Option<f64>,
    /// `measured / expected`.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// The fraction of `expected` needed to pass.
    pub threshold: Option<f64>,
    /// Unit of `measured` and `expected`: "TFLOP/s", "GB/s", "tokens/s".
    pub unit: Option<String>,
    /// For a measured figure, what a low one usually means; for a failed one, what this run's clocks,
    /// power and neighbours suggest first.
    #[serde(default)]
    pub hint: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            measured: None,
            expected: None,
            fraction: None,
            threshold: None,
            unit: None,
            hint: None,
        }
    }
}

/// nvidia-smi's view, or why there is none.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NvidiaSmiReport {
    /// nvidia-smi ran and answered.
    pub available: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// The parsed answer.
    pub info: Option<SmiInfo>,
    /// Each GPU's clocks, power, temperature, throttle reasons and MIG mode before the benchmarks.
    #[serde(default)]
    pub state: Vec<SmiState>,
    /// The processes nvidia-smi lists on the GPUs before the benchmarks.
    #[serde(default)]
    pub processes: Vec<SmiProcess>,
}

/// The raw document of `nvidia_smi.py`.
#[derive(Debug, Deserialize)]
struct SmiRaw {
    available: bool,
    error: Option<String>,
    query: Option<String>,
    summary: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    apps: Option<String>,
}

impl NvidiaSmiReport {
    /// A report from the script's raw answers (nvidia-smi's CSV and summary).
    pub fn from_outputs(query: &str, summary: &str) -> Self {
        match smi::parse(query, summary) {
            Ok(info) => NvidiaSmiReport {
                available: true,
                error: None,
                info: Some(info),
                ..Default::default()
            },
            Err(e) => NvidiaSmiReport::unavailable(e),
        }
    }

    /// This report with each GPU's state ([`STATE_FIELDS`] CSV, then the throttle reasons) and the
    /// processes on the GPUs (`--query-compute-apps` CSV) as nvidia-smi printed them.
    pub fn with_state(mut self, state: &str, processes: &str) -> Self {
        self.state = smi::parse_state(state);
        self.processes = smi::parse_processes(processes);
        self
    }

    fn unavailable(reason: impl Into<String>) -> Self {
        NvidiaSmiReport {
            available: false,
            error: Some(reason.into()),
            ..Default::default()
        }
    }

    fn from_raw(raw: SmiRaw) -> Self {
        match (raw.available, raw.query) {
            (true, Some(query)) => Self::from_outputs(&query, raw.summary.as_deref().unwrap_or(""))
                .with_state(
                    raw.state.as_deref().unwrap_or(""),
                    raw.apps.as_deref().unwrap_or(""),
                ),
            _ => Self::unavailable(
                raw.error
                    .unwrap_or_else(|| "nvidia-smi gave no answer".into()),
            ),
        }
    }
}

/// What nvidia-smi said about a GPU while one benchmark ran on it: sampled every 100 ms, the medians
/// of the samples taken while kernels ran (the hottest temperature), and every throttle reason seen.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    /// Samples taken while the benchmark ran; 0 when nvidia-smi could not be asked (see `error`).
    pub samples: u32,
    /// Why there are no samples.
    pub error: Option<String>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// The highest SM clock the GPU allows (its boost clock), MHz.
    pub max_sm_clock_mhz: Option<f64>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<f64>,
    /// Power draw, W (nvidia-smi's own average over its sample period).
    pub power_w: Option<f64>,
    /// The power limit in force, W.
    pub power_limit_w: Option<f64>,
    /// The highest GPU temperature seen, °C.
    pub temperature_c: Option<f64>,
    /// Share of time a kernel ran, %.
    pub utilization_pct: Option<f64>,
    /// Every throttle reason seen while it ran, except "idle" (see [`throttle_reason_names`]).
    pub throttle_reasons: Option<u64>,
}

/// One matmul measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatmulResult {
    /// "float16", "bfloat16" or "float32".
    pub dtype: String,
    /// Matrix size (n × n times n × n).
    pub n: u64,
    /// Median time of one product, ms.
    pub median_ms: f64,
    /// 2n³ / time, TFLOP/s.
    pub tflops: f64,
    /// The GPU's clocks, power and throttle reasons while it ran, where nvidia-smi could say.
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

/// One device-to-device copy measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthResult {
    /// Bytes copied per copy.
    pub bytes: u64,
    /// Median time of one copy, ms.
    pub median_ms: f64,
    /// Bytes read plus written per second, GB/s.
    pub gbs: f64,
    /// The GPU's clocks, power and throttle reasons while it ran, where nvidia-smi could say.
    #[serde(default)]
    pub telemetry: Option<Telemetry>,
}

/// One CUDA device as PyTorch sees it, with its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchDevice {
    /// CUDA device index.
    pub index: u32,
    /// Device name.
    pub name: String,
    /// Its UUID (nvidia-smi's, without the `GPU-` prefix), where PyTorch reports it.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// Compute capability, [major, minor].
    pub capability: Vec<u32>,
    /// Matmul results, one per dtype measured.
    #[serde(default)]
    pub matmul: Vec<MatmulResult>,
    /// Copy bandwidth, when measured.
    pub bandwidth: Option<BandwidthResult>,
    /// Errors of individual benchmarks (an out-of-memory, say).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// The PyTorch script's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TorchReport {
    /// PyTorch imported.
    pub available: bool,
    /// Why PyTorch or CUDA is not usable.
    pub error: Option<String>,
    /// `torch.__version__`.
    pub torch_version: Option<String>,
    /// The CUDA version PyTorch was built with (`None` for a CPU-only build).
    pub cuda_build: Option<String>,
    /// `torch.cuda.is_available()`.
    pub cuda_available: bool,
    /// Each device.
    #[serde(default)]
    pub devices: Vec<TorchDevice>,
}

/// The NCCL all-reduce script's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NcclReport {
    /// PyTorch with NCCL is there.
    pub available: bool,
    /// Why it did not run or failed.
    pub error: Option<String>,
    /// Processes (GPUs) taking part.
    pub world_size: Option<u32>,
    /// Bytes reduced per all-reduce.
    pub bytes: Option<u64>,
    /// Median time of one all-reduce, ms.
    pub median_ms: Option<f64>,
    /// The sum came out right on rank 0.
    pub correct: Option<bool>,
    /// Algorithm bandwidth (bytes / time), GB/s.
    pub algbw_gbs: Option<f64>,
    /// Bus bandwidth (algbw × 2(n−1)/n, as nccl-tests reports it), GB/s.
    pub busbw_gbs: Option<f64>,
    /// NCCL's version.
    pub nccl_version: Option<String>,
}

/// The vLLM smoke test's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VllmSmokeReport {
    /// vLLM imported.
    pub available: bool,
    /// "ok", "model_unavailable" or "error".
    pub outcome: Option<String>,
    /// Why it did not run or failed.
    pub error: Option<String>,
    /// The model asked for.
    pub model: Option<String>,
    /// vLLM's version.
    pub vllm_version: Option<String>,
    /// Prompts generated for.
    pub prompts: Option<u32>,
    /// Output tokens generated.
    pub output_tokens: Option<u64>,
    /// Generation wall time, s.
    pub elapsed_s: Option<f64>,
    /// Output tokens per second.
    pub tokens_per_s: Option<f64>,
    /// The start of one generated text.
    pub sample: Option<String>,
}

/// Everything `gpulab test` found: the tools' answers and one [`Check`] per line of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// The lab's instance type the figures were compared against; `None` when the checks ran on this
    /// machine (`gpulab test --local`).
    pub instance: Option<String>,
    /// The catalog GPU model the figures were compared against; `None` when there was no GPU to see, or
    /// it is not in the catalog.
    pub gpu_model: Option<String>,
    /// GPUs that should be visible.
    pub expected_gpus: u32,
    /// The pass fractions applied; `None` with no GPU model to judge against.
    pub thresholds: Option<Thresholds>,
    /// nvidia-smi's answer.
    pub nvidia_smi: NvidiaSmiReport,
    /// PyTorch's answer.
    pub torch: TorchReport,
    /// The all-reduce, when run.
    pub nccl: Option<NcclReport>,
    /// The vLLM smoke test, when run.
    pub vllm: Option<VllmSmokeReport>,
    /// The verdict, line by line.
    pub checks: Vec<Check>,
}

impl GpuReport {
    /// Judge the tools' answers against `reference` (a lab's instance type, or the GPU found here).
    pub fn assess(
        reference: &Reference,
        nvidia_smi: NvidiaSmiReport,
        torch: TorchReport,
        nccl: Option<NcclReport>,
        vllm: Option<VllmSmokeReport>,
    ) -> Self {
        let mut checks = vec![verdict::smi_check(reference, &nvidia_smi)];
        checks.extend(verdict::torch_checks(reference, &nvidia_smi, &torch));
        checks.push(verdict::nccl_check(reference, &torch, nccl.as_ref()));
        checks.push(verdict::vllm_check(vllm.as_ref()));
        GpuReport {
            instance: reference.instance.map(|i| i.name.to_string()),
            gpu_model: reference.gpu.map(|g| g.name.to_string()),
            expected_gpus: reference.expected_gpus,
            thresholds: reference.thresholds(),
            nvidia_smi,
            torch,
            nccl,
            vllm,
            checks,
        }
    }

    /// True when no check failed or was unavailable.
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status.is_failure())
    }

    /// The checks that failed or were unavailable.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status.is_failure())
    }

    /// The verdict as table rows: (check, status label, detail).
    pub fn rows(&self) -> Vec<(String, String, String)> {
        self.checks
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.status.label().to_string(),
                    c.detail.clone(),
                )
            })
            .collect()
    }

    /// For a person reading the table: one line per kind of measured figure saying what a low one
    /// usually means, then what this run suggests for each check that failed. Empty when nothing was
    /// measured (no GPU, no PyTorch).
    pub fn explanations(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for kind in verdict::HINTS {
            if self
                .checks
                .iter()
                .any(|c| c.name.starts_with(kind.prefix) && c.measured.is_some())
            {
                lines.push(format!("{}: {}", kind.prefix, kind.hint));
            }
        }
        for check in self.checks.iter().filter(|c| c.status == CheckStatus::Fail) {
            if let Some(hint) = &check.hint
                && !verdict::HINTS.iter().any(|k| k.hint == hint.as_str())
            {
                lines.push(format!("{}: {hint}", check.name));
            }
        }
        lines
    }
}

/// Where the scripts run, for the words of their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A lab's workspace pod.
    Workspace,
    /// The machine gpulab runs on.
    Local,
}

/// Run `script` with `python` (a path or a name on the PATH where it runs; `None`: the workspace's
/// Python, its venv's else `python3`), fed on standard input, and return its JSON document, or why
/// there is none (no Python, a crash, a timeout). Transport failures are errors.
pub(crate) async fn run_python_json(
    exec: &dyn RemoteExec,
    script: &str,
    python: Option<&str>,
    env: Vec<(String, String)>,
    timeout: Duration,
) -> Result<std::result::Result<serde_json::Value, String>> {
    let mut request = match python {
        Some(python) => ExecRequest {
            argv: vec![python.to_string(), "-".to_string()],
            ..Default::default()
        },
        None => ExecRequest::shell(PYTHON_LAUNCHER),
    };
    request.stdin = Some(script.as_bytes().to_vec());
    request.env = env;
    request.timeout = Some(timeout);
    let output = exec.exec(request).await?;
    Ok(parse_script_output(
        &output.stdout,
        &output.stderr,
        output.status.shell_code(),
    ))
}

/// The JSON document in a script's output, or a reason built from its exit code and standard error.
fn parse_script_output(
    stdout: &[u8],
    stderr: &[u8],
    code: i32,
) -> std::result::Result<serde_json::Value, String> {
    let stdout = String::from_utf8_lossy(stdout);
    if let Some(line) = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(JSON_PREFIX))
    {
        return serde_json::from_str(line).map_err(|e| format!("unreadable script output: {e}"));
    }
    let stderr = String::from_utf8_lossy(stderr);
    let tail: String = {
        let trimmed = stderr.trim();
        let start = trimmed.len().saturating_sub(600);
        let start = (start..=trimmed.len())
            .find(|i| trimmed.is_char_boundary(*i))
            .unwrap_or(0);
        trimmed[start..].to_string()
    };
    Err(match code {
        126 | 127 => format!("no Python to run it: {tail}"),
        124 | 137 => format!("timed out or killed (exit {code}): {tail}"),
        _ => format!("the script exited with {code} and no result: {tail}"),
    })
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> std::result::Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected script output: {e}"))
}

/// The suite's scripts, run one after another through one transport.
struct Runner<'a> {
    exec: &'a dyn RemoteExec,
    options: &'a CheckOptions,
    place: Place,
}

impl Runner<'_> {
    async fn script<T: DeserializeOwned>(
        &self,
        script: &str,
        own_env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<std::result::Result<T, String>> {
        let mut env = self.options.env.clone();
        if self.place == Place::Local {
            env.push(("GPULAB_PLACE".into(), "local".into()));
        }
        env.extend(own_env);
        Ok(run_python_json(
            self.exec,
            script,
            self.options.python.as_deref(),
            env,
            timeout,
        )
        .await?
        .and_then(decode))
    }

    /// nvidia-smi, then PyTorch: what the GPUs are.
    async fn inventory(&self) -> Result<(NvidiaSmiReport, TorchReport)> {
        let options = self.options;
        let smi = match self
            .script::<SmiRaw>(NVIDIA_SMI_SCRIPT, vec![], options.script_timeout)
            .await?
        {
            Ok(raw) => NvidiaSmiReport::from_raw(raw),
            Err(why) => NvidiaSmiReport::unavailable(format!("nvidia-smi check: {why}")),
        };
        let repeats = (
            "GPULAB_REPEATS".to_string(),
            options.repeats.max(3).to_string(),
        );
        let torch = self
            .script::<TorchReport>(TORCH_SCRIPT, vec![repeats], options.script_timeout)
            .await?
            .unwrap_or_else(|why| TorchReport {
                error: Some(format!("PyTorch check: {why}")),
                ..Default::default()
            });
        Ok((smi, torch))
    }

    /// The all-reduce and the vLLM smoke test, then the verdict against `reference`.
    async fn finish(
        &self,
        reference: Reference,
        smi: NvidiaSmiReport,
        torch: TorchReport,
    ) -> Result<GpuReport> {
        let options = self.options;
        let multi = reference.expected_gpus >= 2 || torch.devices.len() >= 2;
        let nccl = if options.nccl && multi {
            // The script stops its workers a little before the transport's limit would cut it off.
            let own = vec![
                (
                    "GPULAB_REPEATS".to_string(),
                    options.repeats.max(3).to_string(),
                ),
                (
                    "GPULAB_NCCL_TIMEOUT".to_string(),
                    (options.script_timeout.as_secs() * 9 / 10)
                        .max(1)
                        .to_string(),
                ),
            ];
            Some(
                self.script::<NcclReport>(NCCL_SCRIPT, own, options.script_timeout)
                    .await?
                    .unwrap_or_else(|why| NcclReport {
                        error: Some(format!("NCCL check: {why}")),
                        ..Default::default()
                    }),
            )
        } else {
            None
        };
        let vllm = match &options.vllm_model {
            Some(model) => {
                let mut own = vec![("GPULAB_VLLM_MODEL".to_string(), model.clone())];
                let bf16 = match reference.gpu {
                    Some(gpu) => supports_bf16(gpu),
                    None => torch
                        .devices
                        .first()
                        .is_none_or(|d| d.capability.first().is_some_and(|major| *major >= 8)),
                };
                if !bf16 {
                    own.push(("GPULAB_VLLM_DTYPE".into(), "half".into()));
                }
                Some(
                    self.script::<VllmSmokeReport>(VLLM_SCRIPT, own, options.vllm_timeout)
                        .await?
                        .unwrap_or_else(|why| VllmSmokeReport {
                            model: Some(model.clone()),
                            outcome: Some("error".into()),
                            error: Some(format!("vLLM check: {why}")),
                            ..Default::default()
                        }),
                )
            }
            None => None,
        };
        Ok(GpuReport::assess(&reference, smi, torch, nccl, vllm))
    }
}

/// Run the validation suite in the workspace behind `exec` and judge it against `instance`'s GPU.
/// A missing tool makes its checks [`CheckStatus::Unavailable`]; only a failing transport is an error.
pub async fn run_gpu_checks(
    exec: &dyn RemoteExec,
    instance: &'static InstanceType,
    options: &CheckOptions,
) -> Result<GpuReport> {
    let runner = Runner {
        exec,
        options,
        place: Place::Workspace,
    };
    let (smi, torch) = runner.inventory().await?;
    let reference = Reference::instance(
        instance,
        options.expected_gpus.unwrap_or(instance.gpu_count),
    )
    .with_thresholds(options.thresholds);
    runner.finish(reference, smi, torch).await
}

#[cfg(test)]
mod tests;
