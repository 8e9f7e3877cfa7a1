//! What the workspace's setup installs for a lab: the spec's own lists, or its GPU stack's defaults.

use serde::Serialize;

use super::ValidSpec;
use crate::versions::{DEFAULT_APT_PACKAGES, DEFAULT_EXTRA_PYTHON};

/// What the workspace's setup installs for a lab: from `workspace.python_packages` and
/// `workspace.apt_packages`, or the stack's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspacePackages {
    /// System packages besides sshd and Python.
    pub apt: Vec<String>,
    /// The PyTorch requirement, installed first from [`Self::torch_index`]; `None` installs none.
    pub torch: Option<String>,
    /// The wheel index of that PyTorch.
    pub torch_index: Option<String>,
    /// The other Python requirements.
    pub python: Vec<String>,
}

impl WorkspacePackages {
    /// The packages of `spec`'s workspace.
    pub fn for_spec(spec: &ValidSpec) -> Self {
        let ws = spec.workspace();
        let stack = spec.stack;
        let apt = match &ws.apt_packages {
            Some(list) => list.clone(),
            None => DEFAULT_APT_PACKAGES.iter().map(|s| s.to_string()).collect(),
        };
        let (torch, python) = match &ws.python_packages {
            None => (
                Some(stack.torch.to_string()),
                [stack.vllm, stack.transformers]
                    .into_iter()
                    .chain(DEFAULT_EXTRA_PYTHON.iter().copied())
                    .map(str::to_string)
                    .collect(),
            ),
            Some(list) => {
                let is_torch = |r: &String| requirement_name(r) == "torch";
                (
                    list.iter().find(|r| is_torch(r)).cloned(),
                    list.iter().filter(|r| !is_torch(r)).cloned().collect(),
                )
            }
        };
        WorkspacePackages {
            apt,
            torch_index: torch.as_ref().map(|_| stack.torch_index.to_string()),
            torch,
            python,
        }
    }
}

/// The distribution name of a pip requirement, lower case ("vllm[audio]==0.11.0" → "vllm").
fn requirement_name(requirement: &str) -> String {
    requirement
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect::<String>()
        .to_ascii_lowercase()
}
