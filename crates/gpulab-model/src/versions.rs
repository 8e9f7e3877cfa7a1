//! The software stack per GPU generation: the CUDA base image, the PyTorch build and its wheel index, the
//! vLLM release, and the settings each generation needs. `pip install torch vllm` unpinned breaks by
//! date (a new release drops an architecture, or needs a newer driver); these pins are what `up`
//! installs and `gpulab plan` shows, and change only here, with the reason.
//!
//! Pinned as of 2025-10, from the projects' release notes:
//! - PyTorch 2.8's CUDA 12.8 wheels (the default on PyPI) carry kernels for sm_75 and newer only; Volta
//!   (sm_70) needs the CUDA 12.6 wheels, whose newest PyTorch with a matching vLLM is 2.7.0.
//! - vLLM 0.11 requires torch 2.8.0 and runs only its V1 engine; on Turing (7.5) FlashAttention and the
//!   FlashInfer sampler are unavailable, so it needs the Triton attention backend and the PyTorch
//!   sampler. vLLM 0.9.2 (torch 2.7.0) is the last release with the V0 engine and xFormers, which is
//!   what runs on Volta.
//! - vLLM 0.9.2's wheel requires `torch==2.7.0` exactly (its METADATA), so Volta's PyTorch is 2.7.0 from
//!   the CUDA 12.6 index; vLLM 0.11.0's requires `torch==2.8.0` and `transformers>=4.55.2`.
//! - transformers, accelerate, Jupyter Lab and ipykernel are pinned to their releases of the same month
//!   (transformers 4.53.2 for vLLM 0.9.2, which predates 4.55's changes).
//! - Turing and Volta have no bfloat16: models run in float16.
//! - NVIDIA's CUDA images are deleted from the registry some months after their CUDA release leaves
//!   support (12.4.1 has been); 12.8.1 is current, supports sm_70 to sm_120, and has Ubuntu 22.04 and
//!   24.04 variants. Blackwell gets 24.04 (its newer toolchain), the others 22.04.

use serde::Serialize;

use crate::catalog::InstanceType;

/// The base image when the user gives none and the GPU generation is unknown: the Ampere-to-Hopper
/// stack's.
pub const DEFAULT_BASE_IMAGE: &str = "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04";

/// Python packages besides PyTorch, vLLM and transformers (which the [`Stack`] pins) that the workspace
/// gets by default.
pub const DEFAULT_EXTRA_PYTHON: &[&str] = &["accelerate==1.10.1"];

/// Jupyter Lab and the kernel registered from the workspace's venv, installed when `workspace.jupyter`
/// is on.
pub const JUPYTER_PACKAGES: &[&str] = &["jupyterlab==4.4.9", "ipykernel==6.30.1"];

/// System packages besides sshd and Python that the workspace gets by default: the tools of the
/// original image.
pub const DEFAULT_APT_PACKAGES: &[&str] = &[
    "git",
    "curl",
    "tmux",
    "htop",
    "vim",
    "rsync",
    "build-essential",
    "ca-certificates",
];

/// What one GPU generation runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    /// The generations (catalog architectures) it is for.
    pub architectures: &'static [&'static str],
    /// Their CUDA compute capabilities, for messages ("7.5").
    pub compute_capability: &'static str,
    /// The CUDA base image.
    pub base_image: &'static str,
    /// The PyTorch requirement.
    pub torch: &'static str,
    /// The wheel index of that PyTorch build (its CUDA version).
    pub torch_index: &'static str,
    /// The vLLM requirement.
    pub vllm: &'static str,
    /// The transformers release that vLLM release works with.
    pub transformers: &'static str,
    /// Environment the generation needs (vLLM's backends).
    pub env: &'static [(&'static str, &'static str)],
    /// The dtype models run in.
    pub dtype: &'static str,
    /// Why it differs from the newest stack, in words.
    pub note: &'static str,
}

/// Every stack, oldest generation first.
pub const STACKS: &[Stack] = &[
    Stack {
        architectures: &["Volta"],
        compute_capability: "7.0",
        base_image: "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04",
        torch: "torch==2.7.0",
        torch_index: "https://download.pytorch.org/whl/cu126",
        vllm: "vllm==0.9.2",
        transformers: "transformers==4.53.2",
        env: &[("VLLM_USE_V1", "0"), ("VLLM_ATTENTION_BACKEND", "XFORMERS")],
        dtype: "float16",
        note: "sm_70: PyTorch's CUDA 12.6 wheels (the 12.8 ones have no Volta kernels), vLLM's V0 engine with xFormers",
    },
    Stack {
        architectures: &["Turing"],
        compute_capability: "7.5",
        base_image: "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04",
        torch: "torch==2.8.0",
        torch_index: "https://download.pytorch.org/whl/cu128",
        vllm: "vllm==0.11.0",
        transformers: "transformers==4.57.1",
        env: &[
            ("VLLM_ATTENTION_BACKEND", "TRITON_ATTN"),
            ("VLLM_USE_FLASHINFER_SAMPLER", "0"),
        ],
        dtype: "float16",
        note: "sm_75: no FlashAttention or FlashInfer sampler, no bfloat16",
    },
    Stack {
        architectures: &["Ampere", "Ada Lovelace", "Hopper"],
        compute_capability: "8.0-9.0",
        base_image: DEFAULT_BASE_IMAGE,
        torch: "torch==2.8.0",
        torch_index: "https://download.pytorch.org/whl/cu128",
        vllm: "vllm==0.11.0",
        transformers: "transformers==4.57.1",
        env: &[],
        dtype: "bfloat16",
        note: "the defaults",
    },
    Stack {
        architectures: &["Blackwell"],
        compute_capability: "10.0",
        base_image: "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04",
        torch: "torch==2.8.0",
        torch_index: "https://download.pytorch.org/whl/cu128",
        vllm: "vllm==0.11.0",
        transformers: "transformers==4.57.1",
        env: &[],
        dtype: "bfloat16",
        note: "sm_100: CUDA 12.8 or newer, on Ubuntu 24.04",
    },
];

/// The stack for a GPU architecture as the catalog names it ("Turing"); the Ampere-to-Hopper stack for
/// one the matrix does not know.
pub fn stack_for_architecture(architecture: &str) -> &'static Stack {
    STACKS
        .iter()
        .find(|s| s.architectures.contains(&architecture))
        .unwrap_or(&STACKS[2])
}

/// The stack for an instance type's GPUs.
pub fn stack_for(instance: &InstanceType) -> &'static Stack {
    stack_for_architecture(instance.gpu_model().architecture)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn every_catalog_gpu_has_its_own_stack() {
        for gpu in catalog::gpus() {
            let stack = stack_for_architecture(gpu.architecture);
            assert!(
                stack.architectures.contains(&gpu.architecture),
                "{} ({}) falls back to the default stack",
                gpu.name,
                gpu.architecture
            );
        }
    }

    #[test]
    fn old_generations_get_builds_with_their_kernels_and_backends() {
        let volta = stack_for_architecture("Volta");
        assert!(volta.torch_index.ends_with("/cu126"), "{volta:?}");
        assert_eq!(volta.dtype, "float16");
        let turing = stack_for_architecture("Turing");
        assert!(
            turing
                .env
                .contains(&("VLLM_ATTENTION_BACKEND", "TRITON_ATTN"))
        );
        assert!(turing.env.contains(&("VLLM_USE_FLASHINFER_SAMPLER", "0")));
        assert_eq!(turing.dtype, "float16");
        assert_eq!(stack_for_architecture("Hopper").dtype, "bfloat16");
        assert!(
            stack_for_architecture("Blackwell")
                .base_image
                .ends_with("ubuntu24.04")
        );
    }

    #[test]
    fn everything_is_pinned() {
        for s in STACKS {
            assert!(s.torch.contains("=="), "{s:?}");
            assert!(s.vllm.contains("=="), "{s:?}");
            assert!(s.transformers.contains("=="), "{s:?}");
            for p in DEFAULT_EXTRA_PYTHON.iter().chain(JUPYTER_PACKAGES) {
                assert!(p.contains("=="), "{p}");
            }
            // A tag with a full CUDA version, never `latest` or a floating major.
            let tag = s.base_image.rsplit(':').next().unwrap();
            assert!(
                tag.split('-').next().unwrap().split('.').count() == 3,
                "{s:?}"
            );
        }
    }
}
