//! Python bindings: `import gpulab`. Thin wrappers over gpulab-core; the lifecycle arrives with `Lab`.
fn _placeholder() {}
