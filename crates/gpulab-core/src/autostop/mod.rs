//! Cost safety that runs in the cluster, so it works while the laptop is closed: idle autostop and a
//! budget cap.
//!
//! Two small programs, Python's standard library only, do the work:
//! - `activity.py` runs in the workspace (the setup script starts it; it is also the pod's preStop
//!   hook). It reports whether anyone is using the lab (SSH sessions, busy Jupyter kernels, Slurm jobs,
//!   vLLM requests, GPU processes and utilisation) and shows notices: a `wall` to every terminal and
//!   the file `/workspace/.gpulab/notice`, which a training script can poll.
//! - `agent.py` runs in a pod of its own on a stock Python image (there is no gpulab image in any
//!   public registry). Every 30 s it asks the reporter, keeps a ledger of what the lab has spent, warns
//!   five minutes before an idle stop and at 80 % of the budget, and then scales the GPU node group to
//!   zero (an existing cluster's workspace to zero replicas). `/workspace` stays; `gpulab start` brings
//!   the lab back.
//!
//! The agent holds the only credentials involved: on AWS, an IAM role through EKS Pod Identity that may
//! call [`AGENT_EKS_ACTIONS`] on the lab's node group and nothing else ([`agent_policy`]); in the
//! cluster, a Role that may read and write its state ConfigMap and, on an existing cluster, scale the
//! workspace through the `scale` subresource, and nothing else. This module applies the agent's
//! objects and reads the state the agent writes.

mod cluster;

pub use cluster::read_state;
pub(crate) use cluster::{apply, remove, scale_workspace};

pub use gpulab_model::autostop::*;
// The agent's objects and both programs (`agent.py`, `activity.py`) live beside the model's other
// manifests, so `gpulab plan` renders them without a cluster.
pub use gpulab_model::manifests::autostop::{
    ACTIVITY_SCRIPT, ACTIVITY_TOKEN_DIR, AGENT_SCRIPT, agent_objects, state_config_map,
};
