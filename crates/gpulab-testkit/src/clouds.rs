//! Emulated clouds for a whole lab: AWS in moto, behind the fault proxy that answers the EKS calls moto
//! lacks (access entries, addons), and the cluster side in the Kubernetes emulator, which behaves as an
//! EKS cluster and follows what the EKS API is asked ([`crate::eks_world`]): it starts with EKS's
//! system workloads and no nodes; the lab's node group brings its nodes, the EBS CSI addon its driver.
//! [`EmulatedClouds::lab_options`] points a `Lab` at them: the AWS SDK at the proxy, and the cluster at
//! the emulator (moto's EKS is bookkeeping only; its endpoint answers nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use gpulab_core::LabOptions;
use gpulab_core::provision::aws::{AwsOptions, SdkOptions, WaitOptions, default_retry_config};
use gpulab_core::provision::{ClusterAccess, ClusterAuth};

use crate::eks_world::EksWorld;
use crate::fault_proxy::{FaultConfig, FaultProxy};
use crate::kube::KubeEmulator;
use crate::moto::{EksGaps, MotoServer};

/// moto, the proxy in front of it, and the Kubernetes emulator, all on loopback; stopped when dropped.
pub struct EmulatedClouds {
    /// The AWS emulator.
    pub moto: MotoServer,
    /// The proxy the SDK talks to (in front of moto).
    pub proxy: FaultProxy,
    /// The EKS calls moto lacks (access entries, addons), answered by the proxy.
    pub gaps: Arc<EksGaps>,
    /// What EKS does in the cluster (nodes of node groups, addons' workloads).
    pub world: Arc<EksWorld>,
    /// The Kubernetes emulator standing in for the EKS cluster.
    pub kube: KubeEmulator,
    kubeconfig: PathBuf,
}

impl EmulatedClouds {
    /// Start all three; the emulator's kubeconfig is written into `dir`. Fails when moto is not
    /// installed (`scripts/test` and `scripts/demo` install it into `.venv`).
    pub async fn start(dir: &Path) -> Result<Self, String> {
        let moto = MotoServer::try_start()?;
        let gaps = Arc::new(EksGaps::checking_principals_in(moto.addr()));
        let kube = KubeEmulator::start()
            .await
            .map_err(|e| format!("start the Kubernetes emulator: {e}"))?;
        kube.handle().behave_as_eks();
        let world = Arc::new(EksWorld::new(gaps.clone(), kube.handle(), moto.addr()));
        let proxy = FaultProxy::start(
            moto.addr(),
            FaultConfig {
                seed: 7,
                rules: vec![],
                intercept: Some(world.clone()),
            },
        )
        .await
        .map_err(|e| format!("start the proxy in front of moto: {e}"))?;
        let kubeconfig = dir.join("emulator.kubeconfig");
        kube.write_kubeconfig(&kubeconfig)
            .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
        Ok(EmulatedClouds {
            moto,
            proxy,
            gaps,
            world,
            kube,
            kubeconfig,
        })
    }

    /// Options for a `Lab` kept under `home` that provisions in moto and runs its cluster side in the
    /// emulator, with short waits and quick retries (moto's resources are ready at once).
    pub fn lab_options(&self, home: PathBuf) -> LabOptions {
        LabOptions {
            home: Some(home),
            aws: AwsOptions {
                sdk: SdkOptions {
                    endpoint_url: Some(self.proxy.url()),
                    checkip_url: Some(self.proxy.checkip_url()),
                    credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
                    // moto answers at once, and answers calls it lacks with a 500 that the SDK would
                    // otherwise retry for most of a minute.
                    retry: default_retry_config()
                        .with_max_attempts(2)
                        .with_initial_backoff(Duration::from_millis(20))
                        .with_max_backoff(Duration::from_millis(100)),
                    ..Default::default()
                },
                waits: WaitOptions::fast(),
                stop_after_step: None,
            },
            cluster_override: Some(ClusterAccess {
                endpoint: self.kube.url(),
                ca_pem: None,
                auth: ClusterAuth::Kubeconfig {
                    path: Some(self.kubeconfig.clone()),
                    context: None,
                },
            }),
            ready_timeout: Some(Duration::from_secs(15)),
            gpulab_bin: Some("gpulab".into()),
            ssh_passphrase: None,
        }
    }
}
