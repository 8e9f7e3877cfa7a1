//! A lab whose cluster side is up in the Kubernetes emulator, the starting point of most cluster tests:
//! a CPU node and a GPU node, the NVIDIA device plugin, and the workspace applied and ready, for a spec
//! resolved in a throwaway [`LabDir`] with a test SSH key.

use std::time::Duration;

use gpulab_core::addon::{ClusterAddon, NvidiaDevicePlugin};
use gpulab_core::events::Silent;
use gpulab_core::naming::{KubeNames, LabId};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_core::spec::{SpecLayer, ValidSpec};
use gpulab_core::workspace::{KubeWorkspace, VolumeClass, WorkspaceManager};

use crate::LabDir;
use crate::kube::{KubeEmulator, NodeSpec};

/// The emulator, the user's directory and the lab's spec; the workspace pod is ready.
pub struct ReadyLab {
    /// The cluster.
    pub emu: KubeEmulator,
    /// The user's machine (home, `~/.ssh/id_ed25519.pub`), kept alive as long as the lab.
    pub dir: LabDir,
    /// The lab's spec.
    pub spec: ValidSpec,
    /// The lab's ID, on every object it made.
    pub id: LabId,
}

/// A validated spec with `layer` on the defaults, in a fresh [`LabDir`] holding the test SSH key.
pub fn test_spec(layer: SpecLayer) -> (LabDir, ValidSpec) {
    let dir = LabDir::new().with_default_key();
    let spec = dir
        .inputs(layer)
        .resolve()
        .and_then(|r| r.validate())
        .expect("a valid test spec");
    (dir, spec)
}

impl ReadyLab {
    /// The default lab, ready.
    pub async fn start() -> ReadyLab {
        ReadyLab::start_with(SpecLayer::default()).await
    }

    /// The lab of `layer` on the defaults, ready.
    pub async fn start_with(layer: SpecLayer) -> ReadyLab {
        let emu = KubeEmulator::start()
            .await
            .expect("start the Kubernetes emulator");
        emu.add_node(NodeSpec::cpu("system-1"));
        emu.add_node(NodeSpec::gpu("gpu-1"));
        let (dir, spec) = test_spec(layer);
        let id = LabId::generate().expect("a lab ID");
        let client = emu.client();
        NvidiaDevicePlugin
            .install(&client, &spec, &id, &Silent)
            .await
            .expect("install the device plugin");
        KubeWorkspace
            .apply(&client, &spec, &id, &VolumeClass::Lab, &Silent)
            .await
            .expect("apply the workspace");
        KubeWorkspace
            .wait_ready(&client, &spec, &id, Duration::from_secs(10), &Silent)
            .await
            .expect("the workspace becomes ready");
        ReadyLab { emu, dir, spec, id }
    }

    /// The names of the lab's Kubernetes objects.
    pub fn names(&self) -> KubeNames {
        KubeNames::new(&self.spec.spec)
    }

    /// Exec, copy and tunnel into the workspace pod through the emulator's API.
    pub fn exec(&self) -> ApiServerExec {
        let names = self.names();
        ApiServerExec::new(self.emu.client(), &names.namespace, &names.pod, None)
    }
}
