//! gpulab integration tests live beside this file, one `[[test]]` each; see Cargo.toml.
