//! gpulab-core: GPU development labs on AWS EKS or any Kubernetes cluster.
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
//!
//! ```
//! use gpulab_core::{plan::Plan, spec::SpecInputs};
//!
//! let spec = SpecInputs::default().resolve()?.validate()?;
//! let plan = Plan::new(&spec);
//! assert_eq!(plan.instance.name, "g4dn.xlarge");
//! assert!(plan.cost.per_hour > 0.5);
//! # Ok::<(), gpulab_core::Error>(())
//! ```

pub mod addon;
pub mod catalog;
pub mod checks;
pub mod cluster;
pub mod cost;
mod error;
pub mod events;
pub mod image;
pub mod lab;
pub mod manifest;
pub mod naming;
pub mod plan;
pub mod provision;
pub mod remote;
pub mod slurm;
pub mod spec;
pub mod state;
pub mod status;
pub mod vllm;
pub mod workspace;

pub use error::{Error, Result};
pub use lab::{Lab, LabOptions, Provider};
