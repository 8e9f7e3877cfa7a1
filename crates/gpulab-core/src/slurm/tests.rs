use super::*;

/// The detection output of a g4dn.xlarge pod: `hostname`, `nproc`, /proc/meminfo (head), no cgroup
/// limit below it, `nvidia-smi -L`, the device files.
const G4DN_DETECT: &str = "@@hostname\ngpu-dev-pod\n@@nproc\n4\n@@meminfo\n\
MemTotal:       16006484 kB\nMemFree:         9123456 kB\nMemAvailable:   14021212 kB\n\
@@cgroup\nmax\n@@gpus\nGPU 0: Tesla T4 (UUID: GPU-5e1c2a4b-8f0d-3c7e-a912-6b4d0f8e2a17)\n\
@@devices\nnvidia0\n";

fn node(cpus: u32, memory_mib: u64, devices: &[u32]) -> NodeResources {
    NodeResources {
        hostname: "gpu-dev-pod".into(),
        cpus,
        memory_mib,
        gpus: devices.iter().map(|i| (*i, "GPU".to_string())).collect(),
        gpu_devices: devices.to_vec(),
    }
}

fn expected_conf(cpus: u32, mem: u64, gpus: u32) -> String {
    format!(
        "# Written by gpulab from the resources detected in the pod; `gpulab slurm setup` rewrites it.
ClusterName=gpulab
SlurmctldHost=gpu-dev-pod(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
GresTypes=gpu
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=gpu-dev-pod NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=gpu Nodes=gpu-dev-pod Default=YES MaxTime=INFINITE State=UP
"
    )
}

#[test]
fn one_gpu_from_a_g4dn_xlarge_pod() {
    let node = NodeResources::parse(G4DN_DETECT).unwrap();
    assert_eq!(
        node,
        NodeResources {
            hostname: "gpu-dev-pod".into(),
            cpus: 4,
            memory_mib: 15631,
            gpus: vec![(0, "Tesla T4".into())],
            gpu_devices: vec![0],
        }
    );
    assert_eq!(render_slurm_conf(&node), expected_conf(4, 14849, 1));
    assert_eq!(
        render_gres_conf(&node),
        "# Written by gpulab from the GPUs detected in the pod.\nAutoDetect=off\nName=gpu File=/dev/nvidia0\n"
    );
}

#[test]
fn four_gpus() {
    let node = node(48, 190_000, &[0, 1, 2, 3]);
    assert_eq!(render_slurm_conf(&node), expected_conf(48, 180_500, 4));
    assert_eq!(
        render_gres_conf(&node),
        "# Written by gpulab from the GPUs detected in the pod.\nAutoDetect=off\nName=gpu File=/dev/nvidia[0-3]\n"
    );
}

#[test]
fn eight_gpus() {
    let node = node(192, 2_000_000, &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(render_slurm_conf(&node), expected_conf(192, 1_900_000, 8));
    assert_eq!(
        render_gres_conf(&node),
        "# Written by gpulab from the GPUs detected in the pod.\nAutoDetect=off\nName=gpu File=/dev/nvidia[0-7]\n"
    );
}

#[test]
fn device_files_follow_the_nodes_numbering() {
    // Two GPUs of a p4d given to the pod by the device plugin: the node's numbers, not 0 and 1.
    let out = "@@hostname\nlab\n@@nproc\n8\n@@meminfo\nMemTotal: 1000000000 kB\n@@cgroup\n68719476736\n\
@@gpus\nGPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-a)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-b)\n\
@@devices\nnvidia5\nnvidia2\n";
    let node = NodeResources::parse(out).unwrap();
    assert_eq!(
        node.memory_mib, 65536,
        "the cgroup limit wins over the host's MemTotal"
    );
    assert_eq!(node.gpu_devices, [2, 5]);
    assert_eq!(node.gpu_count(), 2);
    assert_eq!(
        render_gres_conf(&node),
        "# Written by gpulab from the GPUs detected in the pod.\nAutoDetect=off\n\
Name=gpu File=/dev/nvidia2\nName=gpu File=/dev/nvidia5\n"
    );
    assert!(
        render_slurm_conf(&node)
            .contains("NodeName=lab NodeAddr=127.0.0.1 CPUs=8 RealMemory=62259 Gres=gpu:2 ")
    );

    // No GPU at all: no Gres on the node, and setup refuses (see `setup`).
    let none = NodeResources::parse("@@hostname\nlab\n@@nproc\n2\n@@meminfo\nMemTotal: 4096000 kB\n@@cgroup\n@@gpus\n@@devices\n").unwrap();
    assert_eq!(none.gpu_count(), 0);
    assert!(render_slurm_conf(&none).contains("RealMemory=3800 State=UNKNOWN"));
    assert!(
        NodeResources::parse("@@hostname\nlab\n@@nproc\nx\n")
            .unwrap_err()
            .contains("nproc")
    );
}

#[test]
fn sinfo_state_and_srun() {
    let nodes = parse_sinfo("gpu-dev-pod|idle|4|14849|gpu:1\n");
    assert_eq!(
        nodes,
        [SlurmNode {
            name: "gpu-dev-pod".into(),
            state: "idle".into(),
            cpus: 4,
            memory_mib: 14849,
            gres: "gpu:1".into()
        }]
    );
    assert!(nodes[0].is_up());
    assert!(!parse_sinfo("gpu-dev-pod|drained|4|14849|gpu:1")[0].is_up());
    assert_eq!(
        parse_state("@@not-installed\n", true),
        SlurmState::NotInstalled
    );
    assert_eq!(
        parse_state(
            "sinfo: error: Unable to contact slurm controller (connect failure)\n",
            false
        ),
        SlurmState::NotRunning {
            message: "sinfo: error: Unable to contact slurm controller (connect failure)".into()
        }
    );
    assert!(
        matches!(parse_state("gpu-dev-pod|mixed|4|14849|gpu:1\n", true), SlurmState::Running { nodes } if nodes.len() == 1)
    );

    let cmd = [
        "python".to_string(),
        "train.py".into(),
        "--lr".into(),
        "3e-4".into(),
    ];
    assert_eq!(
        srun_argv(&cmd, &SrunOptions::default()),
        [
            "srun",
            "--gres=gpu:1",
            "--job-name=gpulab",
            "--unbuffered",
            "python",
            "train.py",
            "--lr",
            "3e-4"
        ]
    );
    let options = SrunOptions {
        gpus: 0,
        cpus: Some(2),
        job_name: "cpu".into(),
    };
    assert_eq!(
        srun_argv(&cmd[..1], &options),
        [
            "srun",
            "--cpus-per-task=2",
            "--job-name=cpu",
            "--unbuffered",
            "python"
        ]
    );
}
