//! Parsing nvidia-smi's answers: the `--query-gpu` CSV and the summary table's header line.

use serde::{Deserialize, Serialize};

/// The `--query-gpu` fields the nvidia-smi script asks for, in order.
pub const QUERY_FIELDS: &str = "index,name,uuid,pci.bus_id,memory.total,driver_version";

/// One GPU as nvidia-smi lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmiGpu {
    /// nvidia-smi's index (within the container).
    pub index: u32,
    /// Product name, e.g. "Tesla T4", "NVIDIA A10G", "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// The GPU's UUID, `GPU-…`.
    pub uuid: String,
    /// PCI bus id, e.g. `00000000:00:1E.0`.
    pub pci_bus_id: String,
    /// Total memory, MiB.
    pub memory_mib: u64,
}

/// What nvidia-smi says about the driver and the GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmiInfo {
    /// Driver version, e.g. "550.54.15".
    pub driver_version: Option<String>,
    /// The highest CUDA version the driver supports, from the summary header, e.g. "12.4".
    pub cuda_version: Option<String>,
    /// Each GPU, in index order.
    pub gpus: Vec<SmiGpu>,
}

/// Parse `nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,driver_version
/// --format=csv,noheader,nounits` (`query`) and plain `nvidia-smi` (`summary`, for the CUDA version).
pub fn parse(query: &str, summary: &str) -> Result<SmiInfo, String> {
    let mut gpus = Vec::new();
    let mut driver_version = None;
    for line in query.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, name, uuid, pci, memory, driver] = fields.as_slice() else {
            return Err(format!(
                "unexpected nvidia-smi line (want {QUERY_FIELDS}): {line:?}"
            ));
        };
        let number = |what: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("nvidia-smi {what} is not a number: {v:?} in {line:?}"))
        };
        gpus.push(SmiGpu {
            index: number("index", index)? as u32,
            name: name.to_string(),
            uuid: uuid.to_string(),
            pci_bus_id: pci.to_string(),
            memory_mib: number("memory.total", memory)?,
        });
        driver_version.get_or_insert_with(|| driver.to_string());
    }
    Ok(SmiInfo {
        driver_version: driver_version.or_else(|| header_value(summary, "Driver Version:")),
        cuda_version: header_value(summary, "CUDA Version:"),
        gpus,
    })
}

/// The value after `key` in nvidia-smi's header line (`| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15
/// CUDA Version: 12.4 |`).
fn header_value(summary: &str, key: &str) -> Option<String> {
    summary.lines().find_map(|line| {
        let rest = &line[line.find(key)? + key.len()..];
        let value = rest.split_whitespace().next()?.trim_end_matches('|');
        (!value.is_empty() && value != "N/A").then(|| value.to_string())
    })
}

/// Parse `nvidia-smi -L`: `GPU 0: Tesla T4 (UUID: GPU-…)` lines → (index, name).
pub fn parse_list(list: &str) -> Vec<(u32, String)> {
    list.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("GPU ")?;
            let (index, rest) = rest.split_once(':')?;
            let name = rest.split(" (UUID:").next()?.trim();
            Some((index.trim().parse().ok()?, name.to_string()))
        })
        .collect()
}

/// The `--query-gpu` fields of the nvidia-smi script's state query, in order; the script adds the
/// throttle reasons (`clocks_throttle_reasons.active`, or `clocks_event_reasons.active` on drivers
/// that renamed it) as a thirteenth where the driver has it.
pub const STATE_FIELDS: &str = "index,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,\
power.limit,temperature.gpu,utilization.gpu,memory.used,mig.mode.current,compute_mode";

/// One GPU's state as nvidia-smi saw it just before the benchmarks: what else was using it, and its
/// clocks and power at rest. Fields the GPU or driver does not report (`[N/A]`) are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SmiState {
    /// nvidia-smi's index.
    pub index: u32,
    /// SM clock now, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// The highest SM clock the GPU allows, MHz (its boost clock).
    pub max_sm_clock_mhz: Option<f64>,
    /// Memory clock now, MHz.
    pub mem_clock_mhz: Option<f64>,
    /// The highest memory clock, MHz.
    pub max_mem_clock_mhz: Option<f64>,
    /// Power draw, W.
    pub power_w: Option<f64>,
    /// The power limit in force, W: the datasheet's TDP unless an administrator lowered it.
    pub power_limit_w: Option<f64>,
    /// GPU temperature, °C.
    pub temperature_c: Option<f64>,
    /// Share of the last sample period a kernel ran, %: above zero at rest means another process.
    pub utilization_pct: Option<f64>,
    /// Memory in use, MiB: more than a few MiB at rest means another process.
    pub memory_used_mib: Option<f64>,
    /// MIG mode: `Some(true)` when the GPU is partitioned into MIG slices.
    pub mig: Option<bool>,
    /// nvidia-smi's compute mode: "Default", "Exclusive_Process" or "Prohibited".
    pub compute_mode: Option<String>,
    /// The active throttle reasons, NVML's bit mask (see [`throttle_reason_names`]).
    pub throttle_reasons: Option<u64>,
}

/// A value nvidia-smi prints as a number, or `None` for `[N/A]`, `[Not Supported]` and the like.
fn reading(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A bit mask nvidia-smi prints in hex (`0x0000000000000004`).
fn bits(value: &str) -> Option<u64> {
    let value = value.trim();
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    u64::from_str_radix(hex, 16).ok()
}

/// Parse the state query ([`STATE_FIELDS`], then the throttle reasons where present). Lines that do not
/// fit are left out: the state only explains figures, it judges nothing.
pub fn parse_state(csv: &str) -> Vec<SmiState> {
    csv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 12 {
                return None;
            }
            let text = |v: &str| (!v.is_empty() && !v.starts_with('[')).then(|| v.to_string());
            Some(SmiState {
                index: f[0].parse().ok()?,
                sm_clock_mhz: reading(f[1]),
                max_sm_clock_mhz: reading(f[2]),
                mem_clock_mhz: reading(f[3]),
                max_mem_clock_mhz: reading(f[4]),
                power_w: reading(f[5]),
                power_limit_w: reading(f[6]),
                temperature_c: reading(f[7]),
                utilization_pct: reading(f[8]),
                memory_used_mib: reading(f[9]),
                mig: match f[10] {
                    "Enabled" => Some(true),
                    "Disabled" => Some(false),
                    _ => None,
                },
                compute_mode: text(f[11]),
                throttle_reasons: f.get(12).and_then(|v| bits(v)),
            })
        })
        .collect()
}

/// A process nvidia-smi lists as using a GPU (`--query-compute-apps`). In a container it sees only
/// what the PID namespace lets it: other pods' processes show in the memory in use, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmiProcess {
    /// The GPU's UUID, `GPU-…`.
    pub gpu_uuid: String,
    /// Process id.
    pub pid: u32,
    /// Its name, as nvidia-smi prints it.
    pub name: String,
    /// GPU memory it holds, MiB, where reported.
    pub used_memory_mib: Option<u64>,
}

/// Parse `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory
/// --format=csv,noheader,nounits`. A process name with commas in it is kept whole.
pub fn parse_processes(csv: &str) -> Vec<SmiProcess> {
    csv.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let (uuid, pid, rest) = (f.first()?, f.get(1)?, f.get(2..)?);
            let (memory, name) = rest.split_last()?;
            Some(SmiProcess {
                gpu_uuid: uuid.to_string(),
                pid: pid.parse().ok()?,
                name: name.join(", "),
                used_memory_mib: memory.parse().ok(),
            })
        })
        .collect()
}

/// NVML's clock event ("throttle") reasons, bit by bit (`nvmlClocksEventReasons` in nvml.h), in the
/// words the report uses.
const THROTTLE_REASONS: &[(u64, &str)] = &[
    (0x1, "idle"),
    (0x2, "application clocks setting"),
    (0x4, "power cap"),
    (0x8, "hardware slowdown (power brake or overheating)"),
    (0x10, "sync boost"),
    (0x20, "software thermal slowdown"),
    (0x40, "hardware thermal slowdown"),
    (0x80, "power brake"),
    (0x100, "display clock setting"),
];

/// The names of the throttle reasons set in `mask`, in bit order; bits NVML does not define are named
/// by their value.
pub fn throttle_reason_names(mask: u64) -> Vec<String> {
    let mut names: Vec<String> = THROTTLE_REASONS
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect();
    let known = THROTTLE_REASONS.iter().fold(0, |all, (bit, _)| all | bit);
    if mask & !known != 0 {
        names.push(format!("other (0x{:x})", mask & !known));
    }
    names
}
