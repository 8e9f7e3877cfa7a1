//! The verdict: each measurement as a fraction of its datasheet peak, the fractions that pass and why,
//! and what a low figure usually means.

use serde::{Deserialize, Serialize};

use super::{
    Check, CheckStatus, NcclReport, NvidiaSmiReport, SmiState, Telemetry, TorchDevice, TorchReport,
    VllmSmokeReport, throttle_reason_names,
};
use crate::catalog::{self, GpuModel, InstanceType};

/// The fractions of the datasheet figures a benchmark must reach to pass.
///
/// A threshold must never fail a healthy GPU and must catch a sick one, run after run: so it sits well
/// below what a healthy GPU of that model reaches, never near it, and a verdict does not flip between
/// runs. Why a healthy GPU stays below its datasheet peak, and by how much:
///
/// - **Dense, not sparse.** The catalog's tensor peaks are dense: NVIDIA's Ampere-and-newer datasheets
///   print the figure "with sparsity" (2:4 structured sparsity), twice the dense one, which no dense
///   matmul can reach. Against the dense peak, large cuBLAS GEMMs reach roughly 60–90 %.
/// - **Boost, not sustained clocks.** Every peak is at the maximum boost clock. Under a long tensor
///   load a GPU that runs into its power limit lowers its clocks to stay under it: little on the V100
///   and A100, more on the H100/H200 (700 W) and B200 (1,000 W), a lot on the 70 W T4 and 72 W L4,
///   which sustain well below boost (the T4's 65 TFLOP/s needs its 1,590 MHz boost clock; at its
///   70 W cap it runs tensor work nearer 1,000 MHz). The telemetry beside each figure shows the clock,
///   power and throttle reasons of the run.
/// - **fp32 without TF32.** The A10G, L4 and L40S (GA10x and Ada) count a doubled fp32 datapath that
///   SGEMM cannot keep busy: about half the fp32 peak is normal there.
/// - **Memory bandwidth.** The datasheet figure is the memory's raw pin rate; a device-to-device copy
///   reaches 70–90 % of it (refresh, read/write turnaround, and ECC on the GDDR6 parts).
/// - **The measurement's own spread.** Each figure is the median of at least 3 (by default 10) timed
///   repeats of at least 100 ms each, after a warm-up: a few percent run to run on a healthy, idle GPU.
///
/// | GPU              | fp16/bf16 | fp32 | bandwidth | why |
/// |------------------|-----------|------|-----------|-----|
/// | T4 (70 W)        | 0.25      | 0.30 | 0.60      | power-capped: tensor work sustains 30–45 % of the boost-clock peak |
/// | L4 (72 W)        | 0.30      | 0.30 | 0.60      | power-capped like the T4; doubled fp32 datapath |
/// | A10G, L40S       | 0.40      | 0.30 | 0.60      | clocks drop under tensor load (350 W L40S); A10G's tensor figure is not NVIDIA's (see the catalog); doubled fp32 |
/// | V100, A100       | 0.50      | 0.40 | 0.60      | power to spare: 80–90 % of the dense peak is usual |
/// | H100, H200       | 0.45      | 0.40 | 0.60      | GEMMs run into the 700 W limit and lower clocks: 60–75 % is usual |
/// | B200             | 0.40      | 0.40 | 0.60      | 1,000 W limit as the H100's; libraries for it are younger |
///
/// What falls below: a GPU held at low clocks (a lowered power limit, overheating, a power brake),
/// another process on the GPU, a MIG slice or a time-sliced share of it, a degraded part. These
/// fractions come from the datasheets and published ranges, not yet from a run on each of these GPUs
/// (see `checks/testdata/README.md`).
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
    /// The fractions for `gpu` (the table above).
    pub fn for_gpu(gpu: &GpuModel) -> Self {
        let (matmul_fp16, matmul_fp32) = match gpu.id {
            "t4" => (0.25, 0.30),
            "l4" => (0.30, 0.30),
            "a10g" | "l40s" => (0.40, 0.30),
            "h100" | "h200" => (0.45, 0.40),
            "b200" => (0.40, 0.40),
            _ => (0.50, 0.40),
        };
        Thresholds {
            matmul_fp16,
            matmul_fp32,
            bandwidth: 0.60,
        }
    }
}

/// Whether a GPU model has bf16 (Ampere and newer; not Turing's T4 or Volta's V100).
pub fn supports_bf16(gpu: &GpuModel) -> bool {
    !matches!(gpu.architecture, "Turing" | "Volta" | "Pascal")
}

/// What a report's figures are judged against: a lab's instance type, or the GPU found on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The lab's instance type; `None` when the checks ran on this machine.
    pub instance: Option<&'static InstanceType>,
    /// The catalog model the figures are compared with: the instance's GPU, or on this machine the one
    /// the first GPU's product name identifies; `None` when there is no GPU or the catalog lacks it.
    pub gpu: Option<&'static GpuModel>,
    /// GPUs that should be visible.
    pub expected_gpus: u32,
    /// Pass fractions set by the caller; `None` uses [`Thresholds::for_gpu`].
    pub thresholds: Option<Thresholds>,
}

impl Reference {
    /// A lab on `instance`, whose workspace should see `expected_gpus` GPUs.
    pub fn instance(instance: &'static InstanceType, expected_gpus: u32) -> Self {
        Reference {
            instance: Some(instance),
            gpu: Some(instance.gpu_model()),
            expected_gpus,
            thresholds: None,
        }
    }

    /// This machine, as the tools saw it: the GPUs PyTorch sees (which honours `CUDA_VISIBLE_DEVICES`),
    /// else those nvidia-smi lists; the model is the first GPU's ([`catalog::identify_gpu`]), and
    /// `expected_gpus` defaults to how many there are.
    pub fn detect(smi: &NvidiaSmiReport, torch: &TorchReport, expected_gpus: Option<u32>) -> Self {
        let (count, first) = if torch.cuda_available && !torch.devices.is_empty() {
            let d = &torch.devices[0];
            (
                torch.devices.len(),
                Some((d.name.clone(), d.memory_bytes >> 20)),
            )
        } else {
            match smi.info.as_ref().filter(|_| smi.available) {
                Some(info) => (
                    info.gpus.len(),
                    info.gpus.first().map(|g| (g.name.clone(), g.memory_mib)),
                ),
                None => (0, None),
            }
        };
        Reference {
            instance: None,
            gpu: first.and_then(|(name, mib)| catalog::identify_gpu(&name, Some(mib))),
            expected_gpus: expected_gpus.unwrap_or(count as u32),
            thresholds: None,
        }
    }

    /// This reference with the caller's pass fractions, if any.
    pub fn with_thresholds(mut self, thresholds: Option<Thresholds>) -> Self {
        if thresholds.is_some() {
            self.thresholds = thresholds;
        }
        self
    }

    /// The pass fractions in force: the caller's, else those of the reference GPU.
    pub fn thresholds(&self) -> Option<Thresholds> {
        self.thresholds.or(self.gpu.map(Thresholds::for_gpu))
    }

    /// The model `device` is judged against: a lab's GPU for every device; on this machine, each
    /// device's own (so a box with two kinds of GPU judges each by its datasheet). A slice of a GPU
    /// (a g6f's vGPU) shares the chip's time with others, so it is measured but never judged against the
    /// whole chip's peaks.
    fn model_for(&self, device: &TorchDevice) -> Option<&'static GpuModel> {
        match self.instance {
            Some(i) if i.is_fractional_gpu() => None,
            Some(_) => self.gpu,
            None => catalog::identify_gpu(&device.name, Some(device.memory_bytes >> 20)),
        }
    }
}

/// A kind of measured figure and what a low one usually means.
pub(super) struct HintKind {
    /// The start of the names of its checks.
    pub(super) prefix: &'static str,
    /// One line for a learner.
    pub(super) hint: &'static str,
}

/// What a low figure usually means, by kind of check.
pub(super) const HINTS: &[HintKind] = &[
    HintKind {
        prefix: "matmul",
        hint: "a low figure usually means clocks held down (the power cap or heat: see the clocks and \
               throttle reasons beside it), another process on the GPU, or a MIG slice or time-sliced \
               share of it",
    },
    HintKind {
        prefix: "memory bandwidth",
        hint: "a low figure usually means another process using the GPU's memory, a MIG slice (it has \
               a share of the memory system), or memory clocks held down by power or heat",
    },
    HintKind {
        prefix: "nccl all-reduce",
        hint: "a low bus bandwidth usually means the GPUs talk over PCIe rather than NVLink (`nvidia-smi \
               topo -m` shows which), or NCCL chose a slower transport (NCCL_DEBUG=INFO says which)",
    },
];

fn generic_hint(name: &str) -> Option<String> {
    HINTS
        .iter()
        .find(|k| name.starts_with(k.prefix))
        .map(|k| k.hint.to_string())
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

/// A UUID without nvidia-smi's "GPU-" prefix, for comparing nvidia-smi's UUIDs with PyTorch's.
fn bare_uuid(uuid: &str) -> &str {
    uuid.strip_prefix("GPU-").unwrap_or(uuid)
}

/// nvidia-smi's state of the GPU PyTorch calls `device`: matched by UUID, else by index when both
/// tools see the same number of GPUs.
fn state_of<'a>(
    smi: &'a NvidiaSmiReport,
    torch: &TorchReport,
    device: &TorchDevice,
) -> Option<(&'a SmiState, Option<&'a str>)> {
    let info = smi.info.as_ref()?;
    let gpu = match &device.uuid {
        Some(uuid) => info
            .gpus
            .iter()
            .find(|g| bare_uuid(&g.uuid).eq_ignore_ascii_case(bare_uuid(uuid)))?,
        None if info.gpus.len() == torch.devices.len() => info.gpus.get(device.index as usize)?,
        None => return None,
    };
    let state = smi.state.iter().find(|s| s.index == gpu.index)?;
    Some((state, Some(gpu.uuid.as_str())))
}

/// What nvidia-smi said while a benchmark ran, in words: "SM 1755/1980 MHz, 690/700 W, 61 C, throttled:
/// power cap".
fn telemetry_words(t: &Telemetry) -> Option<String> {
    if t.samples == 0 {
        return None;
    }
    let mut parts = Vec::new();
    match (t.sm_clock_mhz, t.max_sm_clock_mhz) {
        (Some(now), Some(max)) => parts.push(format!("SM {now:.0}/{max:.0} MHz")),
        (Some(now), None) => parts.push(format!("SM {now:.0} MHz")),
        _ => {}
    }
    match (t.power_w, t.power_limit_w) {
        (Some(now), Some(limit)) => parts.push(format!("{now:.0}/{limit:.0} W")),
        (Some(now), None) => parts.push(format!("{now:.0} W")),
        _ => {}
    }
    if let Some(temp) = t.temperature_c {
        parts.push(format!("{temp:.0} C"));
    }
    match t.throttle_reasons {
        Some(0) => parts.push("not throttled".into()),
        Some(mask) => parts.push(format!(
            "throttled: {}",
            throttle_reason_names(mask).join(", ")
        )),
        None => {}
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What this run's clocks, power and neighbours say about a low figure, most telling first.
fn diagnose(
    gpu: Option<&GpuModel>,
    telemetry: Option<&Telemetry>,
    state: Option<(&SmiState, Option<&str>)>,
    smi: &NvidiaSmiReport,
) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(t) = telemetry.filter(|t| t.samples > 0) {
        let held = t.throttle_reasons.unwrap_or(0) & !0x1;
        if held != 0 {
            why.push(format!(
                "clocks were held down by: {}",
                throttle_reason_names(held).join(", ")
            ));
        } else if let (Some(now), Some(max)) = (t.sm_clock_mhz, t.max_sm_clock_mhz)
            && now < 0.7 * max
        {
            why.push(format!(
                "the SM clock ran at {now:.0} MHz, {:.0}% of its {max:.0} MHz boost",
                100.0 * now / max
            ));
        }
    }
    if let Some((state, uuid)) = state {
        if let (Some(limit), Some(gpu)) = (state.power_limit_w, gpu)
            && limit < 0.95 * f64::from(gpu.tdp_watts)
        {
            why.push(format!(
                "its power limit is {limit:.0} W, below the datasheet's {} W (`nvidia-smi -q -d POWER`)",
                gpu.tdp_watts
            ));
        }
        if state.mig == Some(true) {
            why.push(
                "MIG is on: PyTorch sees one slice, with a share of the SMs and memory bandwidth"
                    .into(),
            );
        }
        let others: Vec<&super::SmiProcess> = smi
            .processes
            .iter()
            .filter(|p| uuid.is_some_and(|u| p.gpu_uuid == u))
            .collect();
        let used = state.memory_used_mib.unwrap_or(0.0);
        let busy = state.utilization_pct.unwrap_or(0.0);
        if !others.is_empty() || used > 512.0 || busy > 10.0 {
            let names: Vec<String> = others
                .iter()
                .map(|p| format!("{} (pid {})", p.name, p.pid))
                .collect();
            why.push(format!(
                "another process was using the GPU before the check ({used:.0} MiB in use, {busy:.0}% \
                 busy{}{})",
                if names.is_empty() { "" } else { ": " },
                names.join(", ")
            ));
        }
    }
    why
}

/// A datasheet figure, what it is ("dense fp16 peak"), and the fraction of it that passes.
type Peak = (f64, &'static str, f64);

/// A benchmark's line: judged against `peak` when there is one, else measured only.
struct Figure<'a> {
    name: String,
    measured: f64,
    unit: &'static str,
    /// The datasheet figure to judge by, if the catalog has one.
    peak: Option<Peak>,
    /// Size of the run, e.g. "n=8192".
    size: String,
    telemetry: Option<&'a Telemetry>,
    /// The device's product name, for a figure not judged.
    device: &'a str,
}

impl Figure<'_> {
    fn check(self, diagnosis: Vec<String>) -> Check {
        let mut detail = match self.peak {
            Some((expected, what, threshold)) => format!(
                "{:.1} {unit} = {:.0}% of the {expected} {unit} {what} (passes at {:.0}%); {}",
                self.measured,
                100.0 * self.measured / expected,
                100.0 * threshold,
                self.size,
                unit = self.unit,
            ),
            None => format!("{:.1} {}; {}", self.measured, self.unit, self.size),
        };
        if let Some(words) = self.telemetry.and_then(telemetry_words) {
            detail.push_str(&format!("; {words}"));
        }
        let (status, expected, fraction, threshold) = match self.peak {
            Some((expected, _, threshold)) => {
                let fraction = self.measured / expected;
                let status = if fraction >= threshold {
                    CheckStatus::Pass
                } else {
                    CheckStatus::Fail
                };
                (status, Some(expected), Some(fraction), Some(threshold))
            }
            None => {
                detail.push_str(&format!(
                    "; not judged: gpulab's catalog has no datasheet for the {}",
                    self.device
                ));
                (CheckStatus::Measured, None, None, None)
            }
        };
        let hint = if status == CheckStatus::Fail && !diagnosis.is_empty() {
            Some(diagnosis.join("; "))
        } else {
            generic_hint(&self.name)
        };
        Check {
            name: self.name,
            status,
            detail,
            measured: Some(self.measured),
            expected,
            fraction,
            threshold,
            unit: Some(self.unit.into()),
            hint,
        }
    }
}

pub(super) fn smi_check(reference: &Reference, report: &NvidiaSmiReport) -> Check {
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
    let expected = reference.expected_gpus;
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
    if let (Some(_), Some(gpu)) = (reference.instance, reference.gpu)
        && let Some(other) = info.gpus.iter().find(|g| !gpu.matches_name(&g.name))
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
    let mut detail = format!("{versions}; {found}× {}", dedup_join(&names));
    let mig = report.state.iter().filter(|s| s.mig == Some(true)).count();
    if mig > 0 {
        detail.push_str(&format!("; MIG on for {mig} GPU(s)"));
    }
    if !report.processes.is_empty() {
        detail.push_str(&format!(
            "; {} process(es) already using the GPUs",
            report.processes.len()
        ));
    }
    if reference.instance.is_none() {
        match reference.gpu {
            Some(gpu) => detail.push_str(&format!("; judged by the {} datasheet", gpu.name)),
            None => detail.push_str("; not in gpulab's catalog: figures are measured, not judged"),
        }
    }
    Check::new(NAME, CheckStatus::Pass, detail)
}

pub(super) fn torch_checks(
    reference: &Reference,
    smi: &NvidiaSmiReport,
    torch: &TorchReport,
) -> Vec<Check> {
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
    let expected = reference.expected_gpus;
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
        let gpu = reference.model_for(d);
        // The datasheet and the pass fractions, where the catalog has this GPU.
        let judged = gpu.map(|g| (g, reference.thresholds.unwrap_or(Thresholds::for_gpu(g))));
        let state = state_of(smi, torch, d);
        let device_error = |what: &str| {
            d.errors
                .iter()
                .find(|e| e.starts_with(what))
                .cloned()
                .unwrap_or_else(|| format!("{what}: no result"))
        };
        let matmuls: [(&str, &str, Option<Peak>); 3] = [
            (
                "fp16",
                "float16",
                judged.map(|(g, t)| (g.fp16_dense_tflops, "dense fp16 peak", t.matmul_fp16)),
            ),
            (
                "bf16",
                "bfloat16",
                judged.map(|(g, t)| (g.fp16_dense_tflops, "dense bf16 peak", t.matmul_fp16)),
            ),
            (
                "fp32",
                "float32",
                judged.map(|(g, t)| (g.fp32_tflops, "fp32 peak", t.matmul_fp32)),
            ),
        ];
        for (label, dtype, peak) in matmuls {
            let name = format!("matmul {label} gpu{}", d.index);
            let result = d.matmul.iter().find(|m| m.dtype == dtype);
            checks.push(match result {
                Some(m) => Figure {
                    name,
                    measured: m.tflops,
                    unit: "TFLOP/s",
                    peak,
                    size: format!("n={}", m.n),
                    telemetry: m.telemetry.as_ref(),
                    device: &d.name,
                }
                .check(diagnose(gpu, m.telemetry.as_ref(), state, smi)),
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
            Some(b) => Figure {
                name,
                measured: b.gbs,
                unit: "GB/s",
                peak: judged
                    .map(|(g, t)| (g.memory_bandwidth_gbs, "datasheet bandwidth", t.bandwidth)),
                size: format!("{} MiB copy", b.bytes >> 20),
                telemetry: b.telemetry.as_ref(),
                device: &d.name,
            }
            .check(diagnose(gpu, b.telemetry.as_ref(), state, smi)),
            None => Check::new(name, CheckStatus::Fail, device_error("bandwidth")),
        });
    }
    checks
}

pub(super) fn nccl_check(
    reference: &Reference,
    torch: &TorchReport,
    nccl: Option<&NcclReport>,
) -> Check {
    const NAME: &str = "nccl all-reduce";
    let gpus = reference.expected_gpus.max(torch.devices.len() as u32);
    let Some(n) = nccl else {
        let why = match gpus {
            0 => "no GPU visible: nothing to all-reduce across",
            1 => "one GPU: nothing to all-reduce across",
            _ => "not run",
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
            "bus bandwidth {busbw:.1} GB/s (algorithm {algbw:.1} GB/s) over {} GPUs, {} MiB, NCCL {}; \
             no datasheet figure: NVLink or PCIe decides",
            n.world_size.unwrap_or(0),
            n.bytes.unwrap_or(0) >> 20,
            n.nccl_version.as_deref().unwrap_or("?")
        ),
    );
    check.measured = Some(busbw);
    check.unit = Some("GB/s".into());
    check.hint = generic_hint(NAME);
    check
}

pub(super) fn vllm_check(vllm: Option<&VllmSmokeReport>) -> Check {
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
