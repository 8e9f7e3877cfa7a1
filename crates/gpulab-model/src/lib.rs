//! gpulab-model: what a lab is, without any cloud or cluster I/O. A [`spec::LabSpec`] (defaults,
//! `gpulab.toml`, the environment and explicit overrides) is validated into a [`spec::ValidSpec`]
//! against the instance [`catalog`]; [`capacity`] sizes the workspace for a node, [`cost`] prices the
//! lab, [`naming`] names and tags everything it makes, [`versions`] picks the software per GPU
//! generation, [`aws`] fixes what a lab makes on AWS, [`resources`] names the kinds of what it makes,
//! [`manifests`] renders every Kubernetes object a lab applies, [`plan`] puts all of it together with
//! the bill, [`autostop`] holds the idle and budget guard's settings, and [`events`] is the progress
//! vocabulary every stage reports in.
//!
//! gpulab-core builds the lifecycle on these and re-exports each module under the same name
//! (`gpulab_core::spec` is `gpulab_model::spec`).

pub mod autostop;
pub mod aws;
pub mod capacity;
pub mod catalog;
pub mod cost;
pub mod events;
pub mod manifests;
pub mod naming;
pub mod plan;
pub mod resources;
pub mod spec;
pub mod versions;
