//! One module per command.

pub(crate) mod access;
pub(crate) mod catalog;
pub(crate) mod config;
pub(crate) mod image;
pub(crate) mod lab;
pub(crate) mod plan;
pub(crate) mod slurm;
pub(crate) mod test;
pub(crate) mod vllm;
