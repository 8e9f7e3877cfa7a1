//! The GPU validation suite behind `gpulab test` and `Lab::test_gpu`.
//!
//! gpulab ships its own Python scripts into the workspace (embedded in the binary, piped to `python -`
//! through [`RemoteExec::exec`]'s standard input; the image need not have them). Each prints one line
//! `GPULAB_JSON <document>`:
//!
//! - `nvidia_smi.py`: nvidia-smi's GPU list (`--query-gpu` CSV) and summary, parsed here into the driver
//!   and CUDA versions and each GPU's name, memory, UUID and PCI bus id;
//! - `torch_bench.py`: whether PyTorch sees CUDA, each device, and per device a matmul benchmark (fp16,
//!   bf16 on Ampere and newer, fp32 without TF32; a warm-up, CUDA-event timing, the median of the
//!   repeats; the size is the largest of 16384/8192/4096 that fits a quarter of the free memory and
//!   takes at most 0.2 s per product) and a device-to-device copy bandwidth test (1 GiB, read + write);
//! - `nccl.py`: with two or more GPUs, an NCCL all-reduce (256 MiB of fp32, one process per GPU through
//!   `torch.distributed`), checked for the right sum, reported as algorithm and bus bandwidth;
//! - `vllm_smoke.py`: load a small model (default `facebook/opt-125m`) in vLLM, generate, report output
//!   tokens per second; a model that cannot be downloaded is its own outcome,
//!   [`CheckStatus::ModelUnavailable`].
//!
//! # Thresholds
//!
//! Measured figures are compared with the catalog's datasheet figures for the instance's GPU
//! ([`GpuModel`]): a benchmark passes when `measured / datasheet >= fraction`. The fractions
//! ([`Thresholds::for_gpu`]) are set from what healthy GPUs reach with cuBLAS and a plain copy:
//!
//! | check                 | default | power-capped T4 / L4 | why |
//! |-----------------------|---------|----------------------|-----|
//! | matmul fp16/bf16      | 0.50    | 0.30                 | large cuBLAS GEMMs reach 60–80 % of the dense tensor peak on A100/H100; the 70 W T4 and 72 W L4 throttle their clocks under tensor load and reach 30–45 % |
//! | matmul fp32 (no TF32) | 0.40    | 0.30                 | Ampere/Ada's "doubled" fp32 peak is reached only ~50–60 % by SGEMM; a throttled T4 gets ~50 % |
//! | memory bandwidth      | 0.60    | 0.60                 | a device-to-device copy reaches 70–90 % of the datasheet bandwidth on every GPU in the catalog |
//!
//! A sick GPU (wrong clocks, a PCIe-throttled or ECC-degraded part, a GPU shared with another process)
//! lands well below these; a healthy one clears them with room. NCCL all-reduce has no catalog figure
//! (it depends on NVLink/PCIe topology), so it passes when it completes with the right sum and its bus
//! bandwidth is reported.
//!
//! A check whose tool is missing (no nvidia-smi, no PyTorch, no CUDA, no vLLM) is
//! [`CheckStatus::Unavailable`] with the reason, and counts as a failure: a report never passes without
//! the measurements.

mod smi;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::catalog::{GpuModel, InstanceType};
use crate::remote::{ExecRequest, RemoteExec};

pub use smi::{
    QUERY_FIELDS, SmiGpu, SmiInfo, parse as parse_nvidia_smi, parse_list as parse_nvidia_smi_list,
};

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
    /// GPUs the workspace should see; `None` means every GPU of the instance.
    pub expected_gpus: Option<u32>,
    /// Timed repeats per benchmark (the median is reported); at least 3.
    pub repeats: u32,
    /// Run the NCCL all-reduce when there are two or more GPUs.
    pub nccl: bool,
    /// The model for the vLLM smoke test; `None` skips it.
    pub vllm_model: Option<String>,
    /// Pass fractions; `None` uses [`Thresholds::for_gpu`].
    pub thresholds: Option<Thresholds>,
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
            script_timeout: Duration::from_secs(600),
            vllm_timeout: Duration::from_secs(900),
            env: Vec::new(),
        }
    }
}

/// The fractions of the datasheet figures a benchmark must reach to pass (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// fp16 and bf16 matmul, against [`GpuModel::fp16_dense_tflops`].
    pub matmul_fp16: f64,
    /// fp32 matmul without TF32, against [`GpuModel::fp32_tflops`].
    pub matmul_fp32: f64,
    /// Device-to-device copy, against [`GpuModel::memory_bandwidth_gbs`].
    pub bandwidth: f64,
}

impl Thresholds {
    /// The fractions for `gpu`: the defaults, lower matmul fractions for the power-capped T4 and L4.
    pub fn for_gpu(gpu: &GpuModel) -> Self {
        match gpu.id {
            "t4" | "l4" => Thresholds {
                matmul_fp16: 0.30,
                matmul_fp32: 0.30,
                bandwidth: 0.60,
            },
            _ => Thresholds {
                matmul_fp16: 0.50,
                matmul_fp32: 0.40,
                bandwidth: 0.60,
            },
        }
    }
}

/// Whether a GPU model has bf16 (Ampere and newer; not Turing's T4 or Volta's V100).
pub fn supports_bf16(gpu: &GpuModel) -> bool {
    !matches!(gpu.architecture, "Turing" | "Volta" | "Pascal")
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
    /// The figures or the reason, in words.
    pub detail: String,
    /// The measured figure, for benchmarks.
    pub measured: Option<f64>,
    /// The datasheet figure it was compared with.
    pub expected: Option<f64>,
    /// The fraction of `expected` needed to pass.
    pub threshold: Option<f64>,
    /// Unit of `measured` and `expected`: "TFLOP/s", "GB/s", "tokens/s".
    pub unit: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            measured: None,
            expected: None,
            threshold: None,
            unit: None,
        }
    }

    fn against(
        name: String,
        measured: f64,
        expected: f64,
        threshold: f64,
        unit: &str,
        extra: &str,
    ) -> Self {
        let ratio = measured / expected;
        let status = if ratio >= threshold {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        };
        Check {
            name,
            status,
            detail: format!(
                "{measured:.1} {unit} = {:.0}% of {expected} (needs {:.0}%){extra}",
                ratio * 100.0,
                threshold * 100.0
            ),
            measured: Some(measured),
            expected: Some(expected),
            threshold: Some(threshold),
            unit: Some(unit.into()),
        }
    }
}

/// nvidia-smi's view, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NvidiaSmiReport {
    /// nvidia-smi ran and answered.
    pub available: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// The parsed answer.
    pub info: Option<SmiInfo>,
}

/// The raw document of `nvidia_smi.py`.
#[derive(Debug, Deserialize)]
struct SmiRaw {
    available: bool,
    error: Option<String>,
    query: Option<String>,
    summary: Option<String>,
}

impl NvidiaSmiReport {
    /// A report from the script's raw answers (nvidia-smi's CSV and summary).
    pub fn from_outputs(query: &str, summary: &str) -> Self {
        match smi::parse(query, summary) {
            Ok(info) => NvidiaSmiReport {
                available: true,
                error: None,
                info: Some(info),
            },
            Err(e) => NvidiaSmiReport::unavailable(e),
        }
    }

    fn unavailable(reason: impl Into<String>) -> Self {
        NvidiaSmiReport {
            available: false,
            error: Some(reason.into()),
            info: None,
        }
    }

    fn from_raw(raw: SmiRaw) -> Self {
        match (raw.available, raw.query) {
            (true, Some(query)) => Self::from_outputs(&query, raw.summary.as_deref().unwrap_or("")),
            _ => Self::unavailable(
                raw.error
                    .unwrap_or_else(|| "nvidia-smi gave no answer".into()),
            ),
        }
    }
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
}

/// One CUDA device as PyTorch sees it, with its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchDevice {
    /// CUDA device index.
    pub index: u32,
    /// Device name.
    pub name: String,
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
    /// The instance type the figures were compared against.
    pub instance: String,
    /// Its GPU model's name.
    pub gpu_model: String,
    /// GPUs the workspace should see.
    pub expected_gpus: u32,
    /// The pass fractions applied.
    pub thresholds: Thresholds,
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
    /// Judge the tools' answers against `instance`'s catalog figures.
    pub fn assess(
        instance: &InstanceType,
        expected_gpus: u32,
        thresholds: Thresholds,
        nvidia_smi: NvidiaSmiReport,
        torch: TorchReport,
        nccl: Option<NcclReport>,
        vllm: Option<VllmSmokeReport>,
    ) -> Self {
        let gpu = instance.gpu_model();
        let mut checks = vec![smi_check(gpu, expected_gpus, &nvidia_smi)];
        checks.extend(torch_checks(gpu, expected_gpus, thresholds, &torch));
        checks.push(nccl_check(expected_gpus, &torch, nccl.as_ref()));
        checks.push(vllm_check(vllm.as_ref()));
        GpuReport {
            instance: instance.name.into(),
            gpu_model: gpu.name.into(),
            expected_gpus,
            thresholds,
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
}

/// The catalog's name for a GPU model, as it appears in nvidia-smi's product names ("T4", "A10G", "H100").
fn model_token(gpu: &GpuModel) -> String {
    gpu.id
        .split('-')
        .next()
        .unwrap_or(gpu.id)
        .to_ascii_uppercase()
}

fn smi_check(gpu: &GpuModel, expected: u32, report: &NvidiaSmiReport) -> Check {
    const NAME: &str = "nvidia-smi";
    let info = match (&report.info, report.available) {
        (Some(info), true) => info,
        _ => {
            let why = report
                .error
                .as_deref()
                .unwrap_or("nvidia-smi gave no answer");
            return Check::new(NAME, CheckStatus::Unavailable, why);
        }
    };
    let found = info.gpus.len() as u32;
    let versions = format!(
        "driver {}, CUDA {}",
        info.driver_version.as_deref().unwrap_or("?"),
        info.cuda_version.as_deref().unwrap_or("?")
    );
    if found < expected {
        return Check::new(
            NAME,
            CheckStatus::Fail,
            format!("{found} GPU(s) visible, expected {expected} ({versions})"),
        );
    }
    let token = model_token(gpu);
    if let Some(other) = info
        .gpus
        .iter()
        .find(|g| !g.name.to_ascii_uppercase().contains(&token))
    {
        return Check::new(
            NAME,
            CheckStatus::Fail,
            format!(
                "GPU {} is a {}, expected {}",
                other.index, other.name, gpu.name
            ),
        );
    }
    let names: Vec<String> = info
        .gpus
        .iter()
        .map(|g| format!("{} ({} MiB)", g.name, g.memory_mib))
        .collect();
    Check::new(
        NAME,
        CheckStatus::Pass,
        format!("{versions}; {found}× {}", dedup_join(&names)),
    )
}

fn dedup_join(items: &[String]) -> String {
    let mut unique: Vec<&String> = Vec::new();
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn torch_checks(gpu: &GpuModel, expected: u32, t: Thresholds, torch: &TorchReport) -> Vec<Check> {
    const NAME: &str = "pytorch cuda";
    let benchmarks = [
        "matmul fp16",
        "matmul bf16",
        "matmul fp32",
        "memory bandwidth",
    ];
    let unusable = if !torch.available {
        Some(
            torch
                .error
                .clone()
                .unwrap_or_else(|| "PyTorch is missing".into()),
        )
    } else if !torch.cuda_available {
        Some(
            torch
                .error
                .clone()
                .unwrap_or_else(|| "PyTorch sees no CUDA device".into()),
        )
    } else {
        None
    };
    if let Some(why) = unusable {
        let mut checks = vec![Check::new(NAME, CheckStatus::Unavailable, why.clone())];
        checks.extend(benchmarks.iter().map(|b| {
            Check::new(
                *b,
                CheckStatus::Unavailable,
                format!("needs PyTorch with CUDA: {why}"),
            )
        }));
        return checks;
    }
    let found = torch.devices.len() as u32;
    let version = format!(
        "torch {} (CUDA {})",
        torch.torch_version.as_deref().unwrap_or("?"),
        torch.cuda_build.as_deref().unwrap_or("?")
    );
    let names: Vec<String> = torch.devices.iter().map(|d| d.name.clone()).collect();
    let mut checks = vec![if found < expected {
        Check::new(
            NAME,
            CheckStatus::Fail,
            format!("{version}: {found} device(s), expected {expected}"),
        )
    } else {
        Check::new(
            NAME,
            CheckStatus::Pass,
            format!("{version}: {found}× {}", dedup_join(&names)),
        )
    }];
    for d in &torch.devices {
        let device_error = |what: &str| {
            d.errors
                .iter()
                .find(|e| e.starts_with(what))
                .cloned()
                .unwrap_or_else(|| format!("{what}: no result"))
        };
        for (label, dtype, expected_tflops, fraction) in [
            ("fp16", "float16", gpu.fp16_dense_tflops, t.matmul_fp16),
            ("bf16", "bfloat16", gpu.fp16_dense_tflops, t.matmul_fp16),
            ("fp32", "float32", gpu.fp32_tflops, t.matmul_fp32),
        ] {
            let name = format!("matmul {label} gpu{}", d.index);
            let result = d.matmul.iter().find(|m| m.dtype == dtype);
            checks.push(match result {
                Some(m) => Check::against(
                    name,
                    m.tflops,
                    expected_tflops,
                    fraction,
                    "TFLOP/s",
                    &format!(", n={}", m.n),
                ),
                None if dtype == "bfloat16"
                    && d.capability.first().is_some_and(|major| *major < 8) =>
                {
                    Check::new(
                        name,
                        CheckStatus::Skipped,
                        format!(
                            "no bf16 on compute capability {}",
                            d.capability
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(".")
                        ),
                    )
                }
                None => Check::new(
                    name,
                    CheckStatus::Fail,
                    device_error(&format!("matmul {dtype}")),
                ),
            });
        }
        let name = format!("memory bandwidth gpu{}", d.index);
        checks.push(match &d.bandwidth {
            Some(b) => Check::against(
                name,
                b.gbs,
                gpu.memory_bandwidth_gbs,
                t.bandwidth,
                "GB/s",
                &format!(", {} MiB copy", b.bytes >> 20),
            ),
            None => Check::new(name, CheckStatus::Fail, device_error("bandwidth")),
        });
    }
    checks
}

fn nccl_check(expected: u32, torch: &TorchReport, nccl: Option<&NcclReport>) -> Check {
    const NAME: &str = "nccl all-reduce";
    let gpus = expected.max(torch.devices.len() as u32);
    let Some(n) = nccl else {
        let why = if gpus < 2 {
            "one GPU: nothing to all-reduce across"
        } else {
            "not run"
        };
        return Check::new(NAME, CheckStatus::Skipped, why);
    };
    if !n.available {
        let why = n.error.as_deref().unwrap_or("PyTorch with NCCL is missing");
        return Check::new(NAME, CheckStatus::Unavailable, why);
    }
    if let Some(e) = &n.error {
        return Check::new(NAME, CheckStatus::Fail, e.clone());
    }
    if n.correct != Some(true) {
        return Check::new(
            NAME,
            CheckStatus::Fail,
            "the all-reduce returned a wrong sum",
        );
    }
    let (Some(busbw), Some(algbw)) = (n.busbw_gbs, n.algbw_gbs) else {
        return Check::new(NAME, CheckStatus::Fail, "no bandwidth reported");
    };
    let mut check = Check::new(
        NAME,
        CheckStatus::Pass,
        format!(
            "bus bandwidth {busbw:.1} GB/s (algorithm {algbw:.1} GB/s) over {} GPUs, {} MiB, NCCL {}",
            n.world_size.unwrap_or(0),
            n.bytes.unwrap_or(0) >> 20,
            n.nccl_version.as_deref().unwrap_or("?")
        ),
    );
    check.measured = Some(busbw);
    check.unit = Some("GB/s".into());
    check
}

fn vllm_check(vllm: Option<&VllmSmokeReport>) -> Check {
    const NAME: &str = "vllm generate";
    let Some(v) = vllm else {
        return Check::new(NAME, CheckStatus::Skipped, "turned off");
    };
    let model = v.model.as_deref().unwrap_or("?");
    if !v.available {
        let why = v.error.as_deref().unwrap_or("vLLM is missing");
        return Check::new(NAME, CheckStatus::Unavailable, why);
    }
    match v.outcome.as_deref() {
        Some("ok") => match v.tokens_per_s {
            Some(rate) => {
                let mut check = Check::new(
                    NAME,
                    CheckStatus::Pass,
                    format!(
                        "{rate:.0} tokens/s ({} tokens, {} prompts) with {model}, vLLM {}",
                        v.output_tokens.unwrap_or(0),
                        v.prompts.unwrap_or(0),
                        v.vllm_version.as_deref().unwrap_or("?")
                    ),
                );
                check.measured = Some(rate);
                check.unit = Some("tokens/s".into());
                check
            }
            None => Check::new(NAME, CheckStatus::Fail, "generated no tokens"),
        },
        Some("model_unavailable") => Check::new(
            NAME,
            CheckStatus::ModelUnavailable,
            v.error
                .clone()
                .unwrap_or_else(|| format!("could not download {model}")),
        ),
        _ => Check::new(
            NAME,
            CheckStatus::Fail,
            v.error.clone().unwrap_or_else(|| "vLLM failed".into()),
        ),
    }
}

/// Run `script` with the workspace's Python (fed on standard input) and return its JSON document, or why
/// there is none (no Python, a crash, a timeout). Transport failures are errors.
pub(crate) async fn run_python_json(
    exec: &dyn RemoteExec,
    script: &str,
    env: Vec<(String, String)>,
    timeout: Duration,
) -> Result<std::result::Result<serde_json::Value, String>> {
    let mut request = ExecRequest::shell(PYTHON_LAUNCHER);
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
        127 => format!("no Python in the workspace: {tail}"),
        124 | 137 => format!("timed out or killed (exit {code}): {tail}"),
        _ => format!("the script exited with {code} and no result: {tail}"),
    })
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> std::result::Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("unexpected script output: {e}"))
}

async fn run_script<T: DeserializeOwned>(
    exec: &dyn RemoteExec,
    script: &str,
    env: Vec<(String, String)>,
    timeout: Duration,
) -> Result<std::result::Result<T, String>> {
    Ok(run_python_json(exec, script, env, timeout)
        .await?
        .and_then(decode))
}

/// Run the validation suite in the workspace behind `exec` and judge it against `instance`'s GPU.
/// A missing tool makes its checks [`CheckStatus::Unavailable`]; only a failing transport is an error.
pub async fn run_gpu_checks(
    exec: &dyn RemoteExec,
    instance: &InstanceType,
    options: &CheckOptions,
) -> Result<GpuReport> {
    let gpu = instance.gpu_model();
    let expected = options.expected_gpus.unwrap_or(instance.gpu_count);
    let thresholds = options
        .thresholds
        .unwrap_or_else(|| Thresholds::for_gpu(gpu));
    let repeats = (
        "GPULAB_REPEATS".to_string(),
        options.repeats.max(3).to_string(),
    );
    let with_env = |own: Vec<(String, String)>| -> Vec<(String, String)> {
        options.env.iter().cloned().chain(own).collect()
    };

    let smi = match run_script::<SmiRaw>(
        exec,
        NVIDIA_SMI_SCRIPT,
        with_env(vec![]),
        options.script_timeout,
    )
    .await?
    {
        Ok(raw) => NvidiaSmiReport::from_raw(raw),
        Err(why) => NvidiaSmiReport::unavailable(format!("nvidia-smi check: {why}")),
    };
    let torch = run_script::<TorchReport>(
        exec,
        TORCH_SCRIPT,
        with_env(vec![repeats.clone()]),
        options.script_timeout,
    )
    .await?
    .unwrap_or_else(|why| TorchReport {
        error: Some(format!("PyTorch check: {why}")),
        ..Default::default()
    });
    let multi = expected >= 2 || torch.devices.len() >= 2;
    let nccl = if options.nccl && multi {
        let timeout = (
            "GPULAB_NCCL_TIMEOUT".to_string(),
            options.script_timeout.as_secs().to_string(),
        );
        Some(
            run_script::<NcclReport>(
                exec,
                NCCL_SCRIPT,
                with_env(vec![repeats, timeout]),
                options.script_timeout,
            )
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
            if !supports_bf16(gpu) {
                own.push(("GPULAB_VLLM_DTYPE".into(), "half".into()));
            }
            Some(
                run_script::<VllmSmokeReport>(
                    exec,
                    VLLM_SCRIPT,
                    with_env(own),
                    options.vllm_timeout,
                )
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
    Ok(GpuReport::assess(
        instance, expected, thresholds, smi, torch, nccl, vllm,
    ))
}

#[cfg(test)]
mod tests;

/// `word` quoted for a POSIX shell.
pub(crate) fn sh_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
