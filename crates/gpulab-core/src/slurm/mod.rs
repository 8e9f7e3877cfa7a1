//! Slurm in the workspace: a single-node cluster whose `slurm.conf` and `gres.conf` are rendered from
//! the CPUs, memory and GPUs detected in the pod (`nproc`, `/proc/meminfo` and the cgroup limit,
//! `nvidia-smi -L` and the `/dev/nvidiaN` files the device plugin mounted), never hard-coded; setup
//! (munge, slurmctld, slurmd), verification (`sinfo`, `srun --gres=gpu:1 nvidia-smi -L`), jobs with
//! streamed output, and a state probe for `status`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checks::parse_nvidia_smi_list;
use crate::remote::shell_quote;
use crate::remote::{ExecRequest, ExecStreams, ExitStatus, RemoteExec};
use crate::{Error, Result};

/// The setup script run in the workspace (configuration passed in the environment).
pub const SETUP_SCRIPT: &str = include_str!("setup.sh");

/// The cluster's name in slurm.conf.
pub const CLUSTER_NAME: &str = "gpulab";
/// The one partition, default for every job.
pub const PARTITION: &str = "gpu";
/// Percent of the detected memory given to Slurm as `RealMemory`: slurmd drains a node whose configured
/// memory exceeds what it measures itself, and the kernel and daemons keep some.
pub const REAL_MEMORY_PERCENT: u64 = 95;

/// What the pod offers, as detected in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    /// The pod's short host name (the pod name), Slurm's node and controller name.
    pub hostname: String,
    /// CPUs usable by the pod (`nproc`).
    pub cpus: u32,
    /// Memory, MiB: `MemTotal` from /proc/meminfo, or the cgroup limit when lower.
    pub memory_mib: u64,
    /// GPUs from `nvidia-smi -L`: (index, name).
    pub gpus: Vec<(u32, String)>,
    /// The minor numbers of the `/dev/nvidiaN` device files in the pod (the device plugin mounts the
    /// node's numbering, so one GPU of eight may be `/dev/nvidia5`).
    pub gpu_devices: Vec<u32>,
}

impl NodeResources {
    /// The script whose output [`NodeResources::parse`] reads.
    pub const DETECT_SCRIPT: &'static str = "echo @@hostname; hostname -s 2>/dev/null || hostname; \
echo @@nproc; nproc; \
echo @@meminfo; cat /proc/meminfo; \
echo @@cgroup; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true; \
echo @@gpus; nvidia-smi -L 2>/dev/null || true; \
echo @@devices; ls -1 /dev 2>/dev/null | grep -E '^nvidia[0-9]+$' || true";

    /// Parse the output of [`NodeResources::DETECT_SCRIPT`].
    pub fn parse(output: &str) -> std::result::Result<Self, String> {
        let section = |name: &str| -> &str {
            let marker = format!("@@{name}\n");
            let Some(start) = output.find(&marker).map(|i| i + marker.len()) else {
                return "";
            };
            let rest = &output[start..];
            &rest[..rest.find("@@").unwrap_or(rest.len())]
        };
        let hostname = section("hostname").trim().to_string();
        if hostname.is_empty() {
            return Err("no host name in the detection output".into());
        }
        let cpus = section("nproc")
            .trim()
            .parse()
            .map_err(|_| format!("nproc printed {:?}", section("nproc").trim()))?;
        let mem_kib: u64 = section("meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or("no MemTotal in /proc/meminfo")?;
        let mut memory_mib = mem_kib / 1024;
        // "max" (v2) or a huge number (v1) mean no limit; a number below MemTotal is the pod's limit.
        if let Ok(limit) = section("cgroup").trim().parse::<u64>() {
            memory_mib = memory_mib.min(limit / (1024 * 1024));
        }
        let mut gpu_devices: Vec<u32> = section("devices")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nvidia")?.parse().ok())
            .collect();
        gpu_devices.sort_unstable();
        Ok(NodeResources {
            hostname,
            cpus,
            memory_mib,
            gpus: parse_nvidia_smi_list(section("gpus")),
            gpu_devices,
        })
    }

    /// GPUs Slurm manages: the device files found, or nvidia-smi's count where there are none.
    pub fn gpu_count(&self) -> u32 {
        if self.gpu_devices.is_empty() {
            self.gpus.len() as u32
        } else {
            self.gpu_devices.len() as u32
        }
    }

    /// `RealMemory` for slurm.conf, MiB ([`REAL_MEMORY_PERCENT`] of the detected memory).
    pub fn real_memory_mib(&self) -> u64 {
        self.memory_mib * REAL_MEMORY_PERCENT / 100
    }

    /// Device minor numbers for gres.conf: the files found, or nvidia-smi's indices.
    fn device_numbers(&self) -> Vec<u32> {
        if self.gpu_devices.is_empty() {
            self.gpus.iter().map(|(i, _)| *i).collect()
        } else {
            self.gpu_devices.clone()
        }
    }
}

/// Detect the pod's CPUs, memory and GPUs.
pub async fn detect(exec: &dyn RemoteExec) -> Result<NodeResources> {
    let mut request = ExecRequest::shell(NodeResources::DETECT_SCRIPT);
    request.timeout = Some(Duration::from_secs(60));
    let output = exec.exec(request).await?;
    NodeResources::parse(&String::from_utf8_lossy(&output.stdout)).map_err(|e| Error::Remote {
        message: format!("detecting the workspace's resources for Slurm: {e}"),
        hint: None,
    })
}

/// slurm.conf for a single-node cluster on `node`: the controller and the node are the pod, jobs are
/// tracked without cgroups (a container has no systemd), GPUs are a generic resource, and jobs are
/// scheduled by CPUs and GPUs (`CR_CPU`: memory is not consumed, so a job without `--mem` does not
/// take the whole node).
pub fn render_slurm_conf(node: &NodeResources) -> String {
    let host = &node.hostname;
    let gpus = node.gpu_count();
    let gres = if gpus > 0 {
        format!(" Gres=gpu:{gpus}")
    } else {
        String::new()
    };
    format!(
        "# Written by gpulab from the resources detected in the pod; `gpulab slurm setup` rewrites it.\n\
ClusterName={CLUSTER_NAME}\n\
SlurmctldHost={host}(127.0.0.1)\n\
SlurmUser=root\n\
SlurmdUser=root\n\
AuthType=auth/munge\n\
MpiDefault=none\n\
ProctrackType=proctrack/linuxproc\n\
TaskPlugin=task/none\n\
JobAcctGatherType=jobacct_gather/none\n\
AccountingStorageType=accounting_storage/none\n\
SchedulerType=sched/backfill\n\
SelectType=select/cons_tres\n\
SelectTypeParameters=CR_CPU\n\
ReturnToService=2\n\
GresTypes=gpu\n\
StateSaveLocation=/var/spool/slurmctld\n\
SlurmdSpoolDir=/var/spool/slurmd\n\
SlurmctldPidFile=/run/slurmctld.pid\n\
SlurmdPidFile=/run/slurmd.pid\n\
SlurmctldLogFile=/var/log/slurm/slurmctld.log\n\
SlurmdLogFile=/var/log/slurm/slurmd.log\n\
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem}{gres} State=UNKNOWN\n\
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
        cpus = node.cpus,
        mem = node.real_memory_mib(),
    )
}

/// gres.conf: the GPUs' device files, listed explicitly (`AutoDetect=off`: Slurm's NVML detection is
/// not built into the distribution packages), as one range where the numbers are contiguous.
pub fn render_gres_conf(node: &NodeResources) -> String {
    let mut out =
        String::from("# Written by gpulab from the GPUs detected in the pod.\nAutoDetect=off\n");
    let numbers = node.device_numbers();
    let contiguous = numbers.windows(2).all(|w| w[1] == w[0] + 1);
    match numbers.as_slice() {
        [] => {}
        [one] => out.push_str(&format!("Name=gpu File=/dev/nvidia{one}\n")),
        [first, .., last] if contiguous => {
            out.push_str(&format!("Name=gpu File=/dev/nvidia[{first}-{last}]\n"))
        }
        many => {
            for n in many {
                out.push_str(&format!("Name=gpu File=/dev/nvidia{n}\n"));
            }
        }
    }
    out
}

/// How `setup` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOptions {
    /// Install slurm-wlm and munge with apt-get where missing (otherwise fail).
    pub install_missing: bool,
    /// Time limit for the setup script (an install takes a minute or two).
    pub timeout: Duration,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            install_missing: true,
            timeout: Duration::from_secs(900),
        }
    }
}

/// One node as `sinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmNode {
    /// Node name.
    pub name: String,
    /// State: "idle", "mixed", "allocated", "drained", "down*", …
    pub state: String,
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Generic resources, e.g. "gpu:4".
    pub gres: String,
}

impl SlurmNode {
    /// Usable for jobs: idle, mixed or allocated.
    pub fn is_up(&self) -> bool {
        ["idle", "mix", "alloc"]
            .iter()
            .any(|s| self.state.starts_with(s))
    }
}

/// The `sinfo` format [`parse_sinfo`] reads.
pub const SINFO_FORMAT: &str = "%N|%T|%c|%m|%G";

/// Parse `sinfo -h -N -o '%N|%T|%c|%m|%G'`.
pub fn parse_sinfo(output: &str) -> Vec<SlurmNode> {
    output
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().split('|').collect();
            let [name, state, cpus, mem, gres] = f.as_slice() else {
                return None;
            };
            Some(SlurmNode {
                name: name.to_string(),
                state: state.to_string(),
                cpus: cpus.parse().ok()?,
                memory_mib: mem.trim_end_matches('+').parse().ok()?,
                gres: gres.to_string(),
            })
        })
        .collect()
}

/// What setup did and what verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmSetup {
    /// The detected resources the configuration came from.
    pub resources: NodeResources,
    /// The slurm.conf written.
    pub slurm_conf: String,
    /// The gres.conf written.
    pub gres_conf: String,
    /// The setup script's output.
    pub log: String,
    /// The verification.
    pub verification: SlurmVerification,
}

/// `sinfo` and a one-GPU `srun`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmVerification {
    /// The nodes `sinfo` lists.
    pub nodes: Vec<SlurmNode>,
    /// `srun --gres=gpu:1 nvidia-smi -L` exited 0.
    pub srun_ok: bool,
    /// What it printed (its GPU list, or its error).
    pub srun_output: String,
}

impl SlurmVerification {
    /// True when a node is up and the GPU job ran.
    pub fn ok(&self) -> bool {
        self.srun_ok && self.nodes.iter().any(SlurmNode::is_up)
    }
}

/// Write the configuration from the detected resources, set up munge, start slurmctld and slurmd, and
/// verify. Fails before changing anything when the pod has no GPU.
pub async fn setup(exec: &dyn RemoteExec, options: &SetupOptions) -> Result<SlurmSetup> {
    let resources = detect(exec).await?;
    if resources.gpu_count() == 0 {
        return Err(Error::Remote {
            message:
                "Slurm setup: no GPU in the workspace (nvidia-smi -L lists none, no /dev/nvidiaN)"
                    .into(),
            hint: Some(
                "check `gpulab test`: the pod must request GPUs and the device plugin must run"
                    .into(),
            ),
        });
    }
    let log = start(exec, &resources, options).await?;
    let verification = verify(exec).await?;
    Ok(SlurmSetup {
        slurm_conf: render_slurm_conf(&resources),
        gres_conf: render_gres_conf(&resources),
        resources,
        log,
        verification,
    })
}

/// Install what is missing, write the configuration for `resources`, and (re)start munged, slurmctld
/// and slurmd: [`setup`] without its GPU check and verification. Returns the setup script's output.
pub async fn start(
    exec: &dyn RemoteExec,
    resources: &NodeResources,
    options: &SetupOptions,
) -> Result<String> {
    let slurm_conf = render_slurm_conf(resources);
    let gres_conf = render_gres_conf(resources);
    let request = ExecRequest {
        argv: vec!["bash".into(), "-s".into()],
        stdin: Some(SETUP_SCRIPT.as_bytes().to_vec()),
        env: vec![
            ("GPULAB_SLURM_CONF".into(), slurm_conf),
            ("GPULAB_GRES_CONF".into(), gres_conf),
            ("GPULAB_SLURM_NODE".into(), resources.hostname.clone()),
            (
                "GPULAB_SLURM_INSTALL".into(),
                if options.install_missing { "1" } else { "0" }.into(),
            ),
        ],
        timeout: Some(options.timeout),
    };
    let output = exec.exec(request).await?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Error::Remote {
            message: format!(
                "Slurm setup failed (exit {}): {}",
                output.status.shell_code(),
                tail(&log, 1500)
            ),
            hint: (output.status.shell_code() == 3)
                .then(|| "install slurm-wlm and munge in the image, or allow installing".into()),
        });
    }
    Ok(log)
}

fn tail(s: &str, max: usize) -> &str {
    let s = s.trim();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `sinfo` and `srun --gres=gpu:1 nvidia-smi -L`.
pub async fn verify(exec: &dyn RemoteExec) -> Result<SlurmVerification> {
    let sinfo = exec
        .exec(ExecRequest {
            argv: vec![
                "sinfo".into(),
                "-h".into(),
                "-N".into(),
                "-o".into(),
                SINFO_FORMAT.into(),
            ],
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        })
        .await?;
    let mut srun_request = ExecRequest {
        argv: srun_argv(&["nvidia-smi".into(), "-L".into()], &SrunOptions::default()),
        ..Default::default()
    };
    srun_request.argv.insert(1, "--time=2".into());
    srun_request.timeout = Some(Duration::from_secs(180));
    let srun = exec.exec(srun_request).await?;
    Ok(SlurmVerification {
        nodes: parse_sinfo(&String::from_utf8_lossy(&sinfo.stdout)),
        srun_ok: srun.status.success(),
        srun_output: format!(
            "{}{}",
            String::from_utf8_lossy(&srun.stdout),
            String::from_utf8_lossy(&srun.stderr)
        )
        .trim()
        .to_string(),
    })
}

/// How a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrunOptions {
    /// GPUs for the job (`--gres=gpu:N`); 0 asks for none.
    pub gpus: u32,
    /// CPUs per task, when set.
    pub cpus: Option<u32>,
    /// The job's name.
    pub job_name: String,
}

impl Default for SrunOptions {
    fn default() -> Self {
        SrunOptions {
            gpus: 1,
            cpus: None,
            job_name: "gpulab".into(),
        }
    }
}

/// The `srun` command line for `command` (`gpulab slurm run -- CMD`): unbuffered, so output streams.
pub fn srun_argv(command: &[String], options: &SrunOptions) -> Vec<String> {
    let mut argv = vec!["srun".to_string()];
    if options.gpus > 0 {
        argv.push(format!("--gres=gpu:{}", options.gpus));
    }
    if let Some(cpus) = options.cpus {
        argv.push(format!("--cpus-per-task={cpus}"));
    }
    argv.push(format!("--job-name={}", options.job_name));
    argv.push("--unbuffered".into());
    argv.extend(command.iter().cloned());
    argv
}

/// Submit `command` with `srun` and stream its output; the job's exit status is the result.
pub async fn run(
    exec: &dyn RemoteExec,
    command: &[String],
    options: &SrunOptions,
    streams: ExecStreams<'_>,
) -> Result<ExitStatus> {
    if command.is_empty() {
        return Err(Error::Remote {
            message: "slurm run: no command given".into(),
            hint: Some("gpulab slurm run -- python train.py".into()),
        });
    }
    // Through a login shell, so the venv's PATH applies to the job as it does to `gpulab exec`.
    let line = srun_argv(command, options)
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let guard = "command -v srun >/dev/null 2>&1 || { echo 'gpulab: Slurm is not set up in the workspace (no srun); run `gpulab slurm setup` first' >&2; exit 127; }";
    exec.exec_streaming(ExecRequest::shell(format!("{guard}\n{line}")), streams)
        .await
}

/// Slurm's state in the workspace, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum SlurmState {
    /// No Slurm client tools in the workspace (`gpulab slurm setup` installs them).
    NotInstalled,
    /// Installed, but the controller does not answer.
    NotRunning {
        /// What sinfo said.
        message: String,
    },
    /// The controller answers.
    Running {
        /// The nodes and their states.
        nodes: Vec<SlurmNode>,
    },
}

/// Probe Slurm's state in the workspace.
pub async fn state(exec: &dyn RemoteExec) -> Result<SlurmState> {
    let script = format!(
        "command -v sinfo >/dev/null 2>&1 || {{ echo @@not-installed; exit 0; }}; sinfo -h -N -o '{SINFO_FORMAT}' 2>&1"
    );
    // Plain sh, not a login shell: Slurm's tools are in the system PATH, and status calls this on
    // every run, where a login shell's profile would cost more than the probe.
    let request = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script],
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let output = exec.exec(request).await?;
    Ok(parse_state(
        &String::from_utf8_lossy(&output.stdout),
        output.status.success(),
    ))
}

fn parse_state(stdout: &str, success: bool) -> SlurmState {
    if stdout.trim() == "@@not-installed" {
        return SlurmState::NotInstalled;
    }
    let nodes = parse_sinfo(stdout);
    if success && !nodes.is_empty() {
        SlurmState::Running { nodes }
    } else {
        SlurmState::NotRunning {
            message: tail(stdout, 500).to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
