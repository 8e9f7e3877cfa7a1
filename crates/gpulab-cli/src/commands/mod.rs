//! One module per command.

pub(crate) mod access;
pub(crate) mod catalog;
pub(crate) mod config;
pub(crate) mod lab;
pub(crate) mod plan;
