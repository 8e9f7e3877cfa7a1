//! Examples of gpulab-core; run one with `cargo run -p gpulab-examples --example NAME`.
