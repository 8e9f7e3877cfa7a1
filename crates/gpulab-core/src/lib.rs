//! gpulab-core: GPU development labs on AWS EKS or any Kubernetes cluster, from Rust. The `gpulab`
//! command and `import gpulab` are built on it, so a lab behaves the same from each.
//!
//! A lab from start to end: [`Lab::builder`] takes the options the command's flags and the Python
//! keyword arguments take, under the same names (`node_type` for `--node-type`); `up` creates the EKS
//! cluster, its GPU nodes and the workspace pod; `exec` runs commands in the pod and `remote` copies
//! files to and from it; `test_gpu` checks the GPUs against their datasheet; `down` removes everything.
//!
//! ```no_run
//! use gpulab_core::checks::CheckOptions;
//! use gpulab_core::events::Lines;
//! use gpulab_core::remote::{CopyDirection, ExecRequest};
//! use gpulab_core::Lab;
//!
//! #[tokio::main]
//! async fn main() -> gpulab_core::Result<()> {
//!     let lab = Lab::builder().name("dev").node_type("g5.xlarge").build().await?;
//!     lab.up(&Lines).await?; // ~15-20 minutes on AWS; rerun to resume after a failure
//!
//!     let smi = lab.exec(ExecRequest::shell("nvidia-smi")).await?;
//!     print!("{}", String::from_utf8_lossy(&smi.stdout));
//!     let upload = CopyDirection::Upload { local: "train.py".into(), remote: "/workspace/".into() };
//!     lab.remote().await?.copy(upload, &Lines).await?;
//!
//!     let report = lab.test_gpu(&CheckOptions::default()).await?;
//!     for (check, verdict, detail) in report.rows() {
//!         println!("{check:<22} {verdict:<12} {detail}");
//!     }
//!     lab.down(&Lines).await?; // deletes everything, then sweeps for anything left
//!     Ok(())
//! }
//! ```
//!
//! `.context("my-k3s")` or `.kubeconfig(path)` on the builder uses a cluster you already have instead
//! of AWS. `examples/lab_lifecycle.rs` runs these same steps against emulated clouds.
//!
//! Data flows one way: a [`spec::LabSpec`] (what the user asked for, from defaults, `gpulab.toml`, the
//! environment and explicit overrides) is validated into a [`spec::ValidSpec`], which a [`plan::Plan`]
//! describes without any I/O. The lifecycle then runs over four traits, one per layer:
//!
//! - [`provision::ClusterProvisioner`]: a cluster with GPU nodes (EKS, or an existing cluster);
//! - [`addon::ClusterAddon`]: what the cluster needs for GPUs (the NVIDIA device plugin);
//! - [`workspace::WorkspaceManager`]: the GPU pod with SSH, Jupyter and a persistent `/workspace`;
//! - [`remote::RemoteExec`]: commands, file copies and tunnels into that pod.
//!
//! Progress goes to an [`events::Reporter`]; failures are one [`Error`] whose message says what to do.
//! What a lab would create and cost needs no cloud at all:
//!
//! ```
//! use gpulab_core::{plan::Plan, Lab};
//!
//! let spec = Lab::builder().node_type("g5.xlarge").region("us-west-2").spec()?;
//! let plan = Plan::new(&spec);
//! assert_eq!(plan.instance.name, "g5.xlarge");
//! assert!(plan.cost.per_hour > 1.0);
//! # Ok::<(), gpulab_core::Error>(())
//! ```

pub mod addon;
pub mod autostop;
mod builder;
pub mod checks;
pub mod cluster;
mod error;
pub mod image;
pub mod lab;
pub mod manifest;
mod private_files;
pub mod profile;
pub mod provision;
pub mod remote;
pub mod slurm;
pub mod state;
pub mod status;
pub mod vllm;
mod wait;
pub mod workspace;

pub use gpulab_model::{capacity, catalog, cost, events, naming, plan, resources, spec};

pub use builder::LabBuilder;
pub use error::{ApiError, Error, Result};
pub use lab::{Lab, LabOptions, Provider};
