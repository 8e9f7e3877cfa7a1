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
