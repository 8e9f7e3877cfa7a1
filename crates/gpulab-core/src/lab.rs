//! `Lab`: the facade that runs a lab's whole lifecycle over the four traits. The CLI, the Python
//! bindings and Rust programs all drive labs through it, so a lab behaves the same from each.
//!
//! `up`: preflight → network, IAM, cluster and node group (the provider) → device plugin and workspace
//! (applied together) → ready. Every step is idempotent and recorded in the lab's state, so a rerun
//! resumes where the last one stopped, and `down` removes what exists, from any point.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::addon::{ClusterAddon, NvidiaDevicePlugin};
use crate::autostop::{AutostopStatus, Guard};
use crate::cluster;
use crate::cost::CostEstimate;
use crate::events::{Event, Reporter, reported_step};
use crate::naming::{KubeNames, LAB_ID_KEY, LabId};
pub use crate::provision::Provider;
use crate::provision::existing::ExistingCluster;
use crate::provision::{
    ClusterAccess, ClusterBinding, ClusterProvisioner, ProvisionStatus, TagSearch, TeardownReport,
};
use crate::remote::api_server::ApiServerExec;
use crate::remote::{ExecRequest, ExecStreams, ExitStatus, RemoteExec};
use crate::spec::{ResolvedSpec, Source, SshKey, ValidSpec};
use crate::state::{LabDir, LabLock, LabState, UpStep, gpulab_home, list_labs};
use crate::status::{ClusterStatus, cluster_status};
use crate::workspace::{CloudRelease, KubeWorkspace, VolumeClass, WorkspaceInfo, WorkspaceManager};
use crate::{Error, Result, slurm, vllm};

/// How long an image build may take: CUDA, PyTorch and vLLM make a large image.
#[cfg(feature = "aws")]
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Knobs for tests and unusual setups; the defaults are what users get.
#[derive(Clone, Default)]
pub struct LabOptions {
    /// Where labs are kept (default [`gpulab_home`]).
    pub home: Option<PathBuf>,
    /// AWS SDK settings (endpoint override, profile, waits).
    #[cfg(feature = "aws")]
    pub aws: crate::provision::aws::AwsOptions,
    /// Reach the cluster here instead of where the provider says (tests: moto's EKS is bookkeeping
    /// only, so the cluster side runs against a Kubernetes emulator).
    pub cluster_override: Option<ClusterAccess>,
    /// How long `up` waits for the workspace pod (default 20 minutes: the first start installs
    /// packages).
    pub ready_timeout: Option<Duration>,
    /// The program kubeconfigs name as their credential plugin (default: this executable).
    pub gpulab_bin: Option<String>,
    /// Asked for the passphrase of an encrypted SSH key that ssh-agent does not hold (the CLI prompts on
    /// the terminal); without it such a key is an error that says to `ssh-add` it.
    pub ssh_passphrase: Option<crate::remote::ssh::PassphraseFn>,
}

/// What `up` produced.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    /// The lab.
    pub lab: String,
    /// The workspace, ready.
    pub workspace: WorkspaceInfo,
    /// The kubeconfig gpulab wrote for kubectl.
    pub kubeconfig: PathBuf,
    /// What the lab costs per hour now.
    pub cost: CostEstimate,
    /// How long `up` took.
    pub elapsed: Duration,
}

/// A lab's status: the provider's view, the cluster's, and the bill.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// The lab.
    pub lab: String,
    /// The provider's view (cluster and node group states).
    pub provider: Option<ProvisionStatus>,
    /// The cluster side: nodes, device plugin, workspace, GPUs in the pod, services, secrets.
    pub cluster: Option<ClusterStatus>,
    /// Why the cluster could not be asked, when it could not.
    pub cluster_error: Option<String>,
    /// Burn rate and spend.
    pub cost: CostReport,
    /// Idle autostop and the budget: the settings, what the agent last saw, what comes next. `None`
    /// when the cluster could not be asked.
    pub autostop: Option<AutostopStatus>,
}

/// What the lab costs now and has cost so far.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    /// USD per hour at the current node count.
    pub per_hour: f64,
    /// USD spent since `up`, estimated from the recorded node counts and the catalog's prices.
    pub spent: f64,
    /// Hours since `up`.
    pub hours: f64,
    /// GPU nodes running now (as gpulab last set them).
    pub nodes: u32,
    /// The itemised estimate behind `per_hour`.
    pub estimate: CostEstimate,
    /// What autostop and the budget will do, in words ("after 30m idle; at $25.00 spent ($21.90
    /// left)", or "off").
    pub autostop: String,
}

/// A lab on this machine, as `gpulab ls` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    /// The lab's name.
    pub name: String,
    /// The lab's ID.
    pub id: LabId,
    /// Its region.
    pub region: String,
    /// Its node type.
    pub instance_type: String,
    /// Steps of `up` completed.
    pub steps_done: usize,
    /// What it costs now.
    pub cost: CostReport,
}

/// The labs on this machine, as [`Lab::list`] finds them.
#[derive(Debug)]
pub struct LabListing {
    /// Each lab whose record can be read.
    pub labs: Vec<LabSummary>,
    /// Each lab whose record cannot, by name, with why.
    pub unreadable: Vec<(String, Error)>,
}

/// One lab.
pub struct Lab {
    spec: ValidSpec,
    provider: Provider,
    id: LabId,
    dir: LabDir,
    options: LabOptions,
    provisioner: Arc<dyn ClusterProvisioner>,
    /// The workspace's exec transport, made (and its pod's owner checked) on first use.
    remote: tokio::sync::OnceCell<ApiServerExec>,
}

impl Lab {
    /// A lab for `spec`, to be brought up by `provider`: the lab of that name on this machine (with its
    /// ID) if there is one, else a new lab with a new ID, recorded by its first `up`.
    pub async fn new(spec: ValidSpec, provider: Provider, options: LabOptions) -> Result<Lab> {
        let home = options.home.clone().unwrap_or_else(gpulab_home);
        let dir = LabDir::new(&home, spec.name());
        let (id, binding) = match dir.load()? {
            Some(state) => {
                if std::mem::discriminant(&state.provider) != std::mem::discriminant(&provider) {
                    return Err(provider_mismatch(spec.name(), &state.provider));
                }
                (state.id, state.cluster)
            }
            None => (
                LabId::generate().map_err(|e| Error::io("read the system's random source", e))?,
                None,
            ),
        };
        Lab::with_id(spec, provider, id, binding, dir, options).await
    }

    async fn with_id(
        spec: ValidSpec,
        provider: Provider,
        id: LabId,
        binding: Option<ClusterBinding>,
        dir: LabDir,
        options: LabOptions,
    ) -> Result<Lab> {
        let provisioner = provisioner(&spec, &provider, binding, &options).await?;
        Ok(Lab {
            spec,
            provider,
            id,
            dir,
            options,
            provisioner,
            remote: tokio::sync::OnceCell::new(),
        })
    }

    /// The lab of `spec`'s name as recorded on this machine (with its recorded spec and provider), or,
    /// when there is no record, a new AWS lab of `spec` (for `image build` before the first `up`). An
    /// unreadable record is an error.
    pub async fn open(spec: ValidSpec, options: LabOptions) -> Result<Lab> {
        match Lab::find(spec.name(), options.clone()).await? {
            Some(lab) => Ok(lab),
            None => Lab::new(spec, Provider::Aws, options).await,
        }
    }

    /// Look in AWS for labs named as `spec`'s whose local state is gone: what carries the lab's name
    /// tag, grouped by lab ID, and what has the lab's names without any gpulab ID. Changes nothing.
    #[cfg(feature = "aws")]
    pub async fn find_by_tag(spec: &ValidSpec, options: &LabOptions) -> Result<TagSearch> {
        crate::provision::aws::find_by_tag(spec, options.aws.clone()).await
    }

    /// The AWS lab `id` of `spec`'s name, found by [`Lab::find_by_tag`], taken on for `down`: its state is
    /// written again (so a rerun needs no search), and everything `down` touches must carry `id`.
    pub async fn adopt(spec: ValidSpec, id: LabId, options: LabOptions) -> Result<Lab> {
        let home = options.home.clone().unwrap_or_else(gpulab_home);
        let dir = LabDir::new(&home, spec.name());
        let _lock = dir.lock()?;
        if let Some(state) = dir.load()? {
            return Err(Error::State {
                path: dir.state_file(),
                message: format!(
                    "lab {} (ID {}) is already recorded here; `gpulab down --name {}` removes it without a search",
                    spec.name(),
                    state.id,
                    spec.name()
                ),
            });
        }
        dir.save(&LabState::new(id.clone(), spec.spec.clone(), Provider::Aws))?;
        Lab::with_id(spec, Provider::Aws, id, None, dir, options).await
    }

    /// The lab called `name` from its local state (as `up` left it).
    pub async fn load(name: &str, options: LabOptions) -> Result<Lab> {
        let home = options.home.clone().unwrap_or_else(gpulab_home);
        let dir = LabDir::new(&home, name);
        Lab::find(name, options).await?.ok_or_else(|| Error::State {
            path: dir.state_file(),
            message: format!("no lab named {name:?} on this machine; `gpulab ls` lists them, `gpulab up` creates one"),
        })
    }

    /// The lab called `name` from its local state, or `None` when this machine has no record of it. An
    /// unreadable record is an error, never "no lab".
    pub async fn find(name: &str, options: LabOptions) -> Result<Option<Lab>> {
        let home = options.home.clone().unwrap_or_else(gpulab_home);
        let dir = LabDir::new(&home, name);
        let Some(state) = dir.load()? else {
            return Ok(None);
        };
        let spec = ResolvedSpec {
            spec: state.spec.clone(),
            provenance: Default::default(),
            home: dirs::home_dir(),
        }
        .validate()?;
        Lab::with_id(spec, state.provider, state.id, state.cluster, dir, options)
            .await
            .map(Some)
    }

    /// Every lab with state on this machine, and for each lab whose state cannot be read, why (one
    /// corrupt lab does not hide the others).
    pub fn list(options: &LabOptions) -> Result<LabListing> {
        let home = options.home.clone().unwrap_or_else(gpulab_home);
        let now = SystemTime::now();
        let mut labs = Vec::new();
        let mut unreadable = Vec::new();
        for (name, state) in list_labs(&home)? {
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    unreadable.push((name, e));
                    continue;
                }
            };
            let spec = match (ResolvedSpec {
                spec: state.spec.clone(),
                provenance: Default::default(),
                home: dirs::home_dir(),
            })
            .validate()
            {
                Ok(spec) => spec,
                Err(e) => {
                    unreadable.push((name, e.into()));
                    continue;
                }
            };
            labs.push(LabSummary {
                region: spec.spec.region.clone(),
                instance_type: spec.instance.name.into(),
                steps_done: state.steps_done.len(),
                cost: cost_report(&spec, &state.provider, Some(&state), now),
                id: state.id,
                name,
            });
        }
        Ok(LabListing { labs, unreadable })
    }

    /// The lab's spec.
    pub fn spec(&self) -> &ValidSpec {
        &self.spec
    }

    /// Where the lab's cluster comes from.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The lab's ID: on everything it creates, and the only mark it trusts as its own.
    pub fn id(&self) -> &LabId {
        &self.id
    }

    /// The lab's directory on this machine.
    pub fn dir(&self) -> &LabDir {
        &self.dir
    }

    /// The lab's recorded state, if it was ever brought up.
    pub fn state(&self) -> Result<Option<LabState>> {
        self.dir.load()
    }

    /// Bring the lab up, or finish bringing it up: every step finds what exists before creating.
    pub async fn up(&self, reporter: &dyn Reporter) -> Result<UpReport> {
        // On the heap: the whole of `up` is one large future, too large for a small thread's stack.
        Box::pin(self.up_steps(reporter)).await
    }

    async fn up_steps(&self, reporter: &dyn Reporter) -> Result<UpReport> {
        let started = Instant::now();
        let _lock = self.lock()?;
        let existing = self.dir.load()?;
        let fresh = existing.is_none();
        let mut state = match existing {
            // Another process may have made or adopted the lab since this one was opened.
            Some(state) if state.id != self.id => {
                return Err(Error::State {
                    path: self.dir.state_file(),
                    message: format!(
                        "lab {} now has ID {} on this machine, not {}; run the command again",
                        self.spec.name(),
                        state.id,
                        self.id
                    ),
                });
            }
            Some(state) => state,
            None => LabState::new(
                self.id.clone(),
                self.spec.spec.clone(),
                self.provider.clone(),
            ),
        };
        // What `gpulab autostop` set sticks, unless this `up` says otherwise.
        let spec = self.with_recorded_autostop(&state);
        self.check_budget_is_priced(&spec)?;
        state.spec = spec.spec.clone();
        state.provider = self.provider.clone();

        // Providers report their warnings as they find them (and list them in the result).
        let preflight = step(reporter, "preflight", async {
            self.provisioner.preflight(&self.spec, reporter).await
        })
        .await;
        if let Err(e) = preflight {
            // Nothing was created: leave no trace of a lab that never started.
            if fresh {
                self.dir.forget()?;
            }
            return Err(e);
        }
        ensure_user_key(&self.spec, reporter)?;
        state.mark_done(UpStep::Preflight);
        self.dir.save(&state)?;

        let provisioned = self
            .provisioner
            .provision(&self.spec, &self.id, reporter)
            .await?;
        for resource in provisioned.resources {
            state.add_resource(resource);
        }
        if provisioned.binding.is_some() {
            state.cluster = provisioned.binding;
        }
        state.mark_done(UpStep::Provision);
        state.set_nodes(self.spec.nodes().desired, SystemTime::now());
        self.dir.save(&state)?;
        let access = self
            .options
            .cluster_override
            .clone()
            .unwrap_or(provisioned.access);
        self.write_kubeconfig(&access)?;

        let client = cluster::connect(&access).await?;
        // Chosen once: a claim's StorageClass cannot change afterwards.
        let class = match &state.volume_class {
            Some(class) => class.clone(),
            None => {
                let ebs = match self.provider {
                    Provider::Aws => true,
                    Provider::Existing { .. } => cluster::has_ebs_csi_driver(&client).await?,
                };
                VolumeClass::choose(&self.spec, ebs)
            }
        };
        state.volume_class = Some(class.clone());
        self.dir.save(&state)?;
        // The device plugin and the workspace do not depend on each other: apply them together.
        let (_, workspace) = tokio::try_join!(
            NvidiaDevicePlugin.install(&client, &self.spec, &self.id, reporter),
            KubeWorkspace.apply(&client, &self.spec, &self.id, &class, reporter),
        )?;
        state.host_public_key = workspace.host_public_key.clone();
        state.mark_done(UpStep::Workspace);
        self.dir.save(&state)?;

        let workspace = KubeWorkspace
            .wait_ready(
                &client,
                &self.spec,
                &self.id,
                self.ready_timeout(),
                reporter,
            )
            .await?;
        state.host_public_key = workspace.host_public_key.clone();
        state.mark_done(UpStep::Ready);
        self.dir.save(&state)?;
        step(
            reporter,
            "autostop agent",
            self.install_autostop(&client, &spec, &state),
        )
        .await?;

        Ok(UpReport {
            lab: self.spec.name().to_string(),
            workspace,
            kubeconfig: self.dir.kubeconfig(),
            cost: estimate(&self.spec, &self.provider, self.spec.nodes().desired),
            elapsed: started.elapsed(),
        })
    }

    /// Change idle autostop and the budget of a lab that is up, and put the agent in the cluster (or
    /// take it away when both are off). `idle` is a duration such as "30m" or "off"; `budget` is US
    /// dollars such as "25" or "off"; `None` keeps the current setting. The change is recorded, so a
    /// later `up` keeps it unless told otherwise. Bad values are refused before anything changes.
    pub async fn set_autostop(
        &self,
        idle: Option<&str>,
        budget: Option<&str>,
    ) -> Result<AutostopStatus> {
        let _lock = self.lock()?;
        let mut state = self.dir.load()?.ok_or_else(|| Error::State {
            path: self.dir.state_file(),
            message: format!(
                "lab {} has not been brought up on this machine; `gpulab up --autostop …` sets autostop with it",
                self.spec.name()
            ),
        })?;
        let mut layer = crate::spec::SpecLayer::default();
        let mut errors = Vec::new();
        for (option, value) in [("autostop", idle), ("budget", budget)] {
            if let Some(value) = value
                && let Err(e) = layer.set(option, serde_json::Value::from(value))
            {
                errors.push(e.into_field_error(Source::Argument(option.into())));
            }
        }
        let mut wanted = state.spec.autostop.clone();
        if idle.is_some() {
            wanted.idle = layer.autostop.idle;
        }
        if budget.is_some() {
            wanted.budget = layer.autostop.budget;
        }
        let (guard, problems) = Guard::parse(&wanted);
        errors.extend(problems.into_iter().map(|p| crate::spec::FieldError {
            field: p.field.into(),
            value: p.value,
            source: Source::Argument(crate::spec::field_option(p.field).unwrap_or(p.field).into()),
            problem: p.problem,
            allowed: p.allowed.into(),
        }));
        if !errors.is_empty() {
            return Err(crate::spec::SpecErrors(errors).into());
        }
        let mut spec = self.spec.clone();
        spec.spec.autostop = wanted;
        spec.autostop = guard;
        self.check_budget_is_priced(&spec)?;
        let client = self.client().await?;
        self.install_autostop(&client, &spec, &state).await?;
        state.spec.autostop = spec.spec.autostop.clone();
        self.dir.save(&state)?;
        let agent = crate::autostop::read_state(&client, &spec).await?;
        Ok(AutostopStatus::new(guard, agent, SystemTime::now()))
    }

    /// `self.spec`, with the autostop settings the lab's record holds when this spec leaves them at
    /// their defaults: what `gpulab autostop` set stays set.
    fn with_recorded_autostop(&self, state: &LabState) -> ValidSpec {
        let mut spec = self.spec.clone();
        let p = &spec.provenance;
        if p.source("autostop.idle") == Source::Default
            && p.source("autostop.budget") == Source::Default
        {
            spec.spec.autostop = state.spec.autostop.clone();
            spec.autostop = Guard::parse(&spec.spec.autostop).0;
        }
        spec
    }

    /// A budget needs prices: a lab on a cluster gpulab did not make has none.
    fn check_budget_is_priced(&self, spec: &ValidSpec) -> Result<()> {
        if spec.autostop.budget_usd.is_some() && matches!(self.provider, Provider::Existing { .. })
        {
            return Err(crate::spec::SpecErrors(vec![crate::spec::FieldError {
                field: "autostop.budget".into(),
                value: spec.spec.autostop.budget.unwrap_or_default().to_string(),
                source: spec.provenance.source("autostop.budget"),
                problem: "a lab on an existing cluster has no prices: its nodes are billed to the cluster's owner at prices gpulab cannot know".into(),
                allowed: "\"off\" here; idle autostop (--autostop 30m) works on any cluster".into(),
            }])
            .into());
        }
        Ok(())
    }

    /// Run the autostop agent with `spec`'s settings (the ledger starting from what the lab has spent
    /// by the record), or take it away when autostop and the budget are both off.
    async fn install_autostop(
        &self,
        client: &kube::Client,
        spec: &ValidSpec,
        state: &LabState,
    ) -> Result<()> {
        if !spec.autostop.is_on() {
            crate::autostop::remove(client, spec, &self.id).await?;
            return Ok(());
        }
        let names = KubeNames::new(&spec.spec);
        let target = match &self.provider {
            Provider::Aws => {
                let aws = crate::naming::AwsNames::new(&spec.spec);
                crate::autostop::Target::EksNodegroup {
                    region: spec.spec.region.clone(),
                    cluster: aws.cluster,
                    nodegroup: aws.node_group,
                }
            }
            Provider::Existing { .. } => crate::autostop::Target::Statefulset {
                namespace: names.namespace.clone(),
                name: names.workload.clone(),
            },
        };
        let now = SystemTime::now();
        let spent = cost_report(spec, &self.provider, Some(state), now).spent;
        let settings = crate::autostop::Settings::new(spec, &self.id, target, spent, now);
        crate::autostop::apply(client, spec, &self.id, &settings).await
    }

    /// How to reach the lab's cluster now.
    pub async fn access(&self) -> Result<ClusterAccess> {
        match &self.options.cluster_override {
            Some(access) => Ok(access.clone()),
            None => self.provisioner.access(&self.spec, &self.id).await,
        }
    }

    /// A client for the lab's cluster.
    pub async fn client(&self) -> Result<kube::Client> {
        cluster::connect(&self.access().await?).await
    }

    /// The lab as the provider and the cluster see it, and its bill. A cluster that cannot be reached
    /// is reported, not an error.
    pub async fn status(&self) -> Result<LabStatus> {
        let mut state = self.dir.load()?;
        let provider = self.provisioner.status(&self.spec, &self.id).await.ok();
        let (mut cluster, mut cluster_error, mut autostop) = (None, None, None);
        match self.client().await {
            Ok(client) => {
                let names = KubeNames::new(&self.spec.spec);
                let exec = ApiServerExec::new(client.clone(), &names.namespace, &names.pod, None);
                match cluster_status(&client, &self.spec, &self.id, Some(&exec)).await {
                    Ok(status) => cluster = Some(status),
                    Err(e) => cluster_error = Some(e.to_string()),
                }
                let guard = match &state {
                    Some(state) => Guard::parse(&state.spec.autostop).0,
                    None => self.spec.autostop,
                };
                let agent = match crate::autostop::read_state(&client, &self.spec).await {
                    Ok(agent) => agent,
                    Err(e) => {
                        cluster_error.get_or_insert(e.to_string());
                        None
                    }
                };
                // A stop the agent made while this machine was away is a stop in the lab's record
                // too, so the bill counts no node-hours after it.
                if let (Some(state), Some(stopped)) = (
                    state.as_mut(),
                    agent.as_ref().and_then(|a| a.stopped.as_ref()),
                ) {
                    let at = crate::autostop::from_unix(stopped.at);
                    if state
                        .node_history
                        .last()
                        .is_some_and(|span| span.nodes > 0 && span.since < at)
                    {
                        state.set_nodes(0, at);
                        self.dir.save(state)?;
                    }
                }
                autostop = Some(AutostopStatus::new(guard, agent, SystemTime::now()));
            }
            Err(e) => cluster_error = Some(e.to_string()),
        }
        Ok(LabStatus {
            autostop,
            lab: self.spec.name().to_string(),
            provider,
            cluster,
            cluster_error,
            cost: cost_report(
                &self.spec,
                &self.provider,
                state.as_ref(),
                SystemTime::now(),
            ),
        })
    }

    /// What the lab costs now and has cost since `up`.
    pub fn cost(&self) -> Result<CostReport> {
        Ok(cost_report(
            &self.spec,
            &self.provider,
            self.dir.load()?.as_ref(),
            SystemTime::now(),
        ))
    }

    /// Exec, copy and tunnel into the workspace through the API server. A pod of the workspace's name
    /// that is not the lab's is never entered: commands and files meant for the lab must not reach it.
    /// Made once per `Lab` and shared by every call after.
    pub async fn remote(&self) -> Result<Arc<dyn RemoteExec>> {
        Ok(Arc::new(self.api_server().await?))
    }

    /// [`Lab::remote`] as what it is.
    async fn api_server(&self) -> Result<ApiServerExec> {
        self.remote
            .get_or_try_init(|| self.connect_remote())
            .await
            .cloned()
    }

    async fn connect_remote(&self) -> Result<ApiServerExec> {
        let names = KubeNames::new(&self.spec.spec);
        let client = self.client().await?;
        crate::profile::mark("kube client made");
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client.clone(), &names.namespace);
        if let Some(pod) = pods
            .get_opt(&names.pod)
            .await
            .map_err(|e| cluster::cluster_error("read the workspace pod", e))?
            && !self.id.owns_map(pod.metadata.labels.as_ref())
        {
            return Err(Error::Ownership {
                resource: format!("pod {}/{}", names.namespace, names.pod),
                message: format!("it lacks the label {LAB_ID_KEY}={}", self.id),
                hint: "someone else's pod has the workspace's name: gpulab will not run commands or copy files there; `gpulab status` shows the lab".into(),
            });
        }
        crate::profile::mark("pod's owner checked");
        Ok(ApiServerExec::new(
            client,
            &names.namespace,
            &names.pod,
            None,
        ))
    }

    /// Jupyter's token, from the lab's secret.
    pub async fn jupyter_token(&self) -> Result<String> {
        let names = KubeNames::new(&self.spec.spec);
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client().await?, &names.namespace);
        let secret = secrets
            .get(&names.jupyter_token)
            .await
            .map_err(|e| cluster::cluster_error("read the Jupyter token", e))?;
        let token = secret.data.and_then(|d| {
            d.get("token")
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        });
        token.ok_or_else(|| Error::Workspace {
            message: "the Jupyter secret holds no token".into(),
            hint: Some("`gpulab up` recreates it; is workspace.jupyter on?".into()),
        })
    }

    /// Run `request` in the workspace and collect what it prints.
    pub async fn exec(&self, request: ExecRequest) -> Result<crate::remote::ExecOutput> {
        self.remote().await?.exec(request).await
    }

    /// Run `request` in the workspace with its standard streams connected to `streams`.
    pub async fn exec_streaming(
        &self,
        request: ExecRequest,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        self.remote().await?.exec_streaming(request, streams).await
    }

    /// Forward `listen` (a loopback address) to `port` in the workspace, through the API server; the
    /// forward runs until the handle is closed or dropped.
    pub async fn forward(
        &self,
        listen: std::net::SocketAddr,
        port: u16,
        reporter: Arc<dyn Reporter>,
    ) -> Result<crate::remote::forward::ForwardHandle> {
        crate::remote::forward::forward_local(self.remote().await?, listen, port, reporter).await
    }

    /// Bridge `input` and `output` to the workspace's sshd, as ssh's ProxyCommand (`gpulab proxy`).
    pub async fn proxy(
        &self,
        input: impl tokio::io::AsyncRead + Unpin,
        output: impl tokio::io::AsyncWrite + Unpin,
    ) -> Result<()> {
        let tunnel = self
            .remote()
            .await?
            .tunnel(crate::workspace::ports::SSH)
            .await?;
        crate::remote::ssh_config::proxy_stdio(tunnel, input, output).await
    }

    /// [`Lab::proxy`] on this process's standard input and output, read and written without blocking
    /// when they are pipes (as ssh gives its ProxyCommand).
    pub async fn proxy_process_stdio(&self) -> Result<()> {
        let tunnel = self
            .remote()
            .await?
            .tunnel(crate::workspace::ports::SSH)
            .await?;
        crate::remote::ssh_config::proxy_process_stdio(tunnel).await
    }

    /// Write the lab's Host block for plain ssh, scp, rsync and VS Code into `~/.ssh` (`gpulab
    /// ssh-config`), pinned to the host key `up` recorded; without one, only with `accept_new_host_key`.
    pub fn write_ssh_config(
        &self,
        accept_new_host_key: bool,
    ) -> Result<crate::remote::ssh_config::InstalledSshConfig> {
        use crate::remote::ssh_config::{self, SshConfigEntry};
        let gpulab = match &self.options.gpulab_bin {
            Some(bin) => PathBuf::from(bin),
            None => {
                std::env::current_exe().map_err(|e| Error::io("find the gpulab executable", e))?
            }
        };
        let mut entry = SshConfigEntry::new(
            self.spec.name().to_string(),
            &gpulab,
            self.dir.path().join("known_hosts"),
        );
        entry.user = crate::remote::ssh::workspace_user();
        entry.identity_file = Some(self.ssh_identity());
        entry.host_key = self.state()?.and_then(|s| s.host_public_key);
        entry.accept_new_host_key = accept_new_host_key;
        let ssh_dir = ssh_config::default_ssh_dir()
            .ok_or_else(|| Error::io("find ~/.ssh", std::io::Error::other("no home directory")))?;
        ssh_config::install(&entry, &ssh_dir)
    }

    /// An EKS bearer token for the lab's cluster, as the kubectl exec-credential JSON the kubeconfig
    /// gpulab writes asks for (`gpulab token`).
    #[cfg(feature = "aws")]
    pub async fn token(&self) -> Result<String> {
        use crate::provision::TokenSource;
        use crate::provision::aws::{AwsProvisioner, exec_credential_json};
        let aws = AwsProvisioner::connect(&self.spec, self.options.aws.clone()).await;
        let token = aws.tokens(&self.spec)?.token().await?;
        Ok(exec_credential_json(&token))
    }

    /// Run the GPU validation suite on this machine (no lab, no cluster), judged against the catalog's
    /// figures for the GPU nvidia-smi names (`gpulab test --local`). `options.python`, when given, must
    /// be a Python 3 interpreter: a usage error otherwise.
    pub async fn test_local(
        options: &crate::checks::CheckOptions,
    ) -> Result<crate::checks::GpuReport> {
        let mut options = options.clone();
        if let Some(python) = &options.python {
            let path = crate::checks::resolve_python(python).map_err(|problem| Error::Usage {
                message: format!("python {python}: {problem}"),
                hint: "give the Python that has PyTorch (--python, or python= from Python), e.g. /opt/conda/bin/python3 or .venv/bin/python; `which python3` shows the one on the PATH".into(),
            })?;
            options.python = Some(path.display().to_string());
        }
        crate::checks::run_local_gpu_checks(&options).await
    }

    /// Run the GPU validation suite in the workspace (nvidia-smi, PyTorch matmul and bandwidth, NCCL,
    /// vLLM) and judge it against the catalog's figures for the lab's GPU.
    pub async fn test_gpu(
        &self,
        options: &crate::checks::CheckOptions,
    ) -> Result<crate::checks::GpuReport> {
        let remote = self.remote().await?;
        let mut options = options.clone();
        options.expected_gpus = options.expected_gpus.or(Some(self.spec.workspace().gpus));
        crate::checks::run_gpu_checks(remote.as_ref(), self.spec.instance, &options).await
    }

    /// vLLM settings for `model`, sized for the lab's GPUs: memory share, context length, dtype and
    /// tensor parallelism (see [`vllm::ServeConfig::for_gpu`]).
    pub fn vllm_config(&self, model: impl Into<String>) -> vllm::ServeConfig {
        vllm::ServeConfig::for_gpu(model, self.spec.instance, self.spec.workspace().gpus)
    }

    /// Start `vllm serve` in the workspace (or find the one running) and, given `wait`, wait that long
    /// for it to answer; the log is in [`vllm::LOG_FILE`] in the pod.
    pub async fn vllm_serve(
        &self,
        config: &vllm::ServeConfig,
        wait: Option<Duration>,
    ) -> Result<vllm::ServerHandle> {
        let remote = self.remote().await?;
        let server = vllm::start(remote.as_ref(), config).await?;
        if let Some(timeout) = wait {
            vllm::wait_ready(remote.as_ref(), config.port, timeout).await?;
        }
        Ok(server)
    }

    /// The last `lines` lines of the vLLM server's log in the workspace.
    pub async fn vllm_log(&self, lines: u32) -> Result<String> {
        vllm::log_tail(self.remote().await?.as_ref(), lines).await
    }

    /// Stop the vLLM server [`Lab::vllm_serve`] started; false when none was running.
    pub async fn vllm_stop(&self) -> Result<bool> {
        vllm::stop(self.remote().await?.as_ref()).await
    }

    /// Measure the running vLLM server's throughput from inside the pod.
    pub async fn vllm_bench(&self, options: &vllm::BenchOptions) -> Result<vllm::BenchReport> {
        options.check()?;
        vllm::bench(self.remote().await?.as_ref(), options).await
    }

    /// Set up Slurm in the workspace from the GPUs, CPUs and memory found there, start it, and verify it
    /// with `sinfo` and a one-GPU `srun`.
    pub async fn slurm_setup(&self, options: &slurm::SetupOptions) -> Result<slurm::SlurmSetup> {
        slurm::setup(self.remote().await?.as_ref(), options).await
    }

    /// Submit `command` to the workspace's Slurm with `srun` and stream its output.
    pub async fn slurm_run(
        &self,
        command: &[String],
        options: &slurm::SrunOptions,
        streams: ExecStreams<'_>,
    ) -> Result<ExitStatus> {
        slurm::run(self.remote().await?.as_ref(), command, options, streams).await
    }

    /// Build the workspace image and push it to the lab's ECR repository (created when missing, deleted by
    /// `down`): with docker when a daemon answers, otherwise as a kaniko Job in the lab's cluster. Run the
    /// lab on it with `up --image REFERENCE`.
    #[cfg(feature = "aws")]
    pub async fn build_image(
        &self,
        options: &crate::image::ImageOptions,
        reporter: &dyn Reporter,
    ) -> Result<crate::image::BuiltImage> {
        let config =
            crate::provision::aws::load_sdk_config(&self.spec.spec.region, &self.options.aws.sdk)
                .await;
        let ecr = crate::provision::aws::ecr::EcrClient::new(&config)?;
        // Only the in-cluster build needs the cluster; a lab that is not up can still build with docker.
        // A cluster gpulab did not make has no node role with push rights to the lab's repository.
        let cluster = match self.provider {
            Provider::Aws => self.client().await.ok(),
            Provider::Existing { .. } => {
                if !crate::image::docker_available().await {
                    return Err(Error::Workspace {
                        message: "no docker daemon answers here, and an existing cluster's nodes cannot push to the lab's ECR repository".into(),
                        hint: Some("start docker and run `gpulab image build` again".into()),
                    });
                }
                None
            }
        };
        // The repository carries the lab's ID: record the lab first, so `down` finds it.
        self.ensure_state()?;
        crate::image::build_and_push(
            &self.spec,
            &self.id,
            options,
            &ecr,
            cluster.as_ref(),
            IMAGE_BUILD_TIMEOUT,
            reporter,
        )
        .await
    }

    /// Resize the GPU node group; 0 stops the GPU bill and keeps the cluster and `/workspace`. Back
    /// above 0 (`start`), it waits until the workspace's StatefulSet has its pod ready again on the new
    /// node, with the same `/workspace`. On an existing cluster the workspace itself goes to 0 or 1
    /// replicas (the cluster's nodes are not gpulab's to size).
    pub async fn scale(&self, desired: u32, reporter: &dyn Reporter) -> Result<()> {
        let _lock = self.lock()?;
        match self.provider {
            Provider::Aws => {
                self.provisioner
                    .scale(&self.spec, &self.id, desired, reporter)
                    .await?
            }
            // gpulab does not size someone else's nodes: it stops and starts the workspace itself,
            // as the autostop agent does there.
            Provider::Existing { .. } => {
                let client = self.client().await?;
                step(
                    reporter,
                    &format!("scale the workspace to {}", desired.min(1)),
                    crate::autostop::scale_workspace(&client, &self.spec, &self.id, desired.min(1)),
                )
                .await?;
            }
        }
        if let Some(mut state) = self.dir.load()? {
            state.set_nodes(desired, SystemTime::now());
            self.dir.save(&state)?;
        }
        if desired > 0 {
            let client = self.client().await?;
            KubeWorkspace
                .wait_ready(
                    &client,
                    &self.spec,
                    &self.id,
                    self.ready_timeout(),
                    reporter,
                )
                .await?;
        }
        Ok(())
    }

    /// How long to wait for the workspace pod (default 20 minutes: a first start pulls a CUDA image and
    /// installs packages).
    fn ready_timeout(&self) -> Duration {
        self.options
            .ready_timeout
            .unwrap_or(Duration::from_secs(20 * 60))
    }

    /// Remove everything the lab made: first, through the cluster, what owns cloud resources (the
    /// LoadBalancer service, the volume claim), then the provider's resources; then forget the lab
    /// when nothing is left. What has the lab's names but not its ID is left alone, and reported.
    pub async fn down(&self, reporter: &dyn Reporter) -> Result<TeardownReport> {
        Box::pin(self.down_steps(reporter)).await
    }

    async fn down_steps(&self, reporter: &dyn Reporter) -> Result<TeardownReport> {
        let _lock = self.lock()?;
        let mut left_alone = Vec::new();
        match self.client().await {
            Ok(client) => {
                let removed = step(reporter, "remove the workspace and device plugin", async {
                    let mut release = CloudRelease::find(&client, &self.spec, &self.id, false).await?;
                    // The EBS CSI controller deletes the volume, and runs on the lab's nodes: with none
                    // (a stopped lab), nothing in the cluster will, so teardown deletes it by its tags
                    // at once rather than after a wait that cannot end well.
                    if release.volume.is_some() && !cluster::has_ready_node(&client).await? {
                        release.volume = None;
                    }
                    let mut found = KubeWorkspace
                        .delete(&client, &self.spec, &self.id, false)
                        .await?;
                    found.extend(
                        NvidiaDevicePlugin
                            .remove(&client, &self.spec, &self.id)
                            .await?,
                    );
                    // The cluster's controllers delete the load balancer and the EBS volume; the
                    // nodes they run on must outlive that.
                    if !release
                        .wait(&client, &self.spec, RELEASE_TIMEOUT, reporter)
                        .await?
                    {
                        reporter.report(Event::Warning {
                            message: format!(
                                "the cluster had not released the load balancer and volume after {} s; teardown deletes them by the lab's tags",
                                RELEASE_TIMEOUT.as_secs()
                            ),
                        });
                    }
                    Ok(found)
                })
                .await;
                match removed {
                    Ok(found) => left_alone.extend(found),
                    Err(e) => reporter.report(Event::Warning {
                        message: format!("could not clean the cluster first ({e}); its load balancer and volume are swept by tag"),
                    }),
                }
            }
            // A kubeconfig that now leads to another cluster: nothing there is the lab's.
            Err(e @ Error::Ownership { .. })
                if matches!(self.provider, Provider::Existing { .. }) =>
            {
                return Err(e);
            }
            Err(e) => reporter.report(Event::Warning {
                message: format!("cluster not reachable ({e}); going on with the cloud"),
            }),
        }
        let mut report = self
            .provisioner
            .teardown(&self.spec, &self.id, reporter)
            .await?;
        for thing in &left_alone {
            reporter.report(Event::Warning {
                message: thing.to_string(),
            });
        }
        left_alone.append(&mut report.left_alone);
        report.left_alone = left_alone;
        if report.leftovers.is_empty() {
            self.dir.forget()?;
        } else if let Some(mut state) = self.dir.load()? {
            state.steps_done.clear();
            state.set_nodes(0, SystemTime::now());
            self.dir.save(&state)?;
        }
        Ok(report)
    }

    /// Record the lab on this machine if `up` has not yet (an image built before the first `up`).
    fn ensure_state(&self) -> Result<()> {
        let _lock = self.lock()?;
        if self.dir.load()?.is_none() {
            self.dir.save(&LabState::new(
                self.id.clone(),
                self.spec.spec.clone(),
                self.provider.clone(),
            ))?;
        }
        Ok(())
    }

    fn lock(&self) -> Result<LabLock> {
        self.dir.lock()
    }

    fn write_kubeconfig(&self, access: &ClusterAccess) -> Result<()> {
        let gpulab = self.options.gpulab_bin.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "gpulab".into())
        });
        #[cfg(feature = "aws")]
        if self.provider == Provider::Aws {
            return crate::provision::aws::kubeconfig::write_kubeconfig(
                &self.dir.kubeconfig(),
                self.spec.name(),
                &access.endpoint,
                access.ca_pem.as_deref(),
                &gpulab,
            );
        }
        let _ = (access, gpulab);
        Ok(())
    }

    /// The private key gpulab logs in to the workspace with: the one beside the spec's public key
    /// (`~/.ssh/id_ed25519` for `~/.ssh/id_ed25519.pub`), or the pair `up` generated.
    pub fn ssh_identity(&self) -> PathBuf {
        match &self.spec.ssh_key {
            SshKey::Existing { path, .. } => path.with_extension(""),
            SshKey::Generate { path } => path.clone(),
        }
    }

    /// An SSH session to the workspace's sshd, through the API server's port-forward to the pod's port 22
    /// (no public port needed): logged in as [`crate::remote::ssh::workspace_user`] with
    /// [`Lab::ssh_identity`] (and the SSH agent, when `SSH_AUTH_SOCK` is set), the server's host key pinned
    /// to the one `up` recorded. Clones of the session share its connection.
    pub async fn ssh(&self) -> Result<crate::remote::ssh::SshSession> {
        use crate::remote::ssh::{
            HostKeyPolicy, SshAuth, SshOptions, SshSession, parse_public_key, workspace_user,
        };
        let host_key = self
            .state()?
            .and_then(|s| s.host_public_key)
            .ok_or_else(|| Error::State {
                path: self.dir.state_file(),
                message: "the workspace's host key is not recorded yet; run `gpulab up` first"
                    .into(),
            })?;
        let options = SshOptions::new(
            workspace_user(),
            SshAuth {
                passphrase: self.options.ssh_passphrase.clone(),
                ..SshAuth::key(self.ssh_identity()).with_agent_from_env()
            },
            HostKeyPolicy::Pinned(parse_public_key(&host_key)?),
        );
        let tunnel = self
            .remote()
            .await?
            .tunnel(crate::workspace::ports::SSH)
            .await?;
        crate::profile::mark("port-forward open");
        SshSession::connect_stream(tunnel, format!("gpulab-{}", self.spec.name()), options).await
    }
}

impl Lab {
    /// Copy `sources` to `target` (`gpulab cp`): all sources local and the target a workspace path
    /// (`:PATH`), or the other way round; globs expanded on their side; several sources into a directory.
    /// `via` picks the transport (see [`crate::remote::copy::Via`]): by default one source goes as one
    /// tar stream through the API server's exec and more over SSH; the report says which carried it. Bad
    /// input is [`Error::Usage`] before the cluster is asked anything; a failure part way says what had
    /// been copied.
    pub async fn copy(
        &self,
        sources: &[String],
        target: &str,
        via: crate::remote::copy::Via,
        options: &crate::remote::CopyOptions,
        reporter: &dyn Reporter,
    ) -> std::result::Result<crate::remote::copy::CopyReport, crate::remote::copy::CopyFailed> {
        use crate::remote::copy::{CopyFailed, CopyPlan, CopyReport, ExecFirst, Via, copy};
        let failed = |error: Error| CopyFailed {
            done: CopyReport::default(),
            error,
        };
        let checked = CopyPlan::parse(sources, target)
            .map_err(failed)?
            .check_local()
            .await
            .map_err(failed)?;
        let (result, used) = match via {
            Via::Auto if checked.exec_first(options) => {
                let kube = self.api_server().await.map_err(failed)?;
                // An explicit login user must own what is copied; root (the default) is what exec runs as.
                let user = std::env::var(crate::remote::ssh::USER_ENV)
                    .ok()
                    .is_some_and(|u| !u.trim().is_empty())
                    .then(crate::remote::ssh::workspace_user);
                let auto = ExecFirst::new(kube.like_ssh(user), move || {
                    Box::pin(async move { self.ssh().await.map_err(suggest_via_kube) })
                });
                let result = copy(&auto, checked, options, reporter).await;
                auto.close().await;
                (result, auto.used())
            }
            Via::Auto | Via::Ssh => {
                let ssh = self.ssh().await.map_err(|e| failed(suggest_via_kube(e)))?;
                let result = copy(&ssh, checked, options, reporter).await;
                let _ = ssh.close().await;
                (result, Some(Via::Ssh))
            }
            Via::Kube => {
                let remote = self.remote().await.map_err(failed)?;
                (
                    copy(remote.as_ref(), checked, options, reporter).await,
                    Some(Via::Kube),
                )
            }
        };
        match result {
            Ok(mut report) => {
                report.via = used;
                Ok(report)
            }
            Err(mut failed) => {
                failed.done.via = used.filter(|_| !failed.done.sources.is_empty());
                Err(failed)
            }
        }
    }

    /// Make a directory in the workspace mirror a local one, or the other way round (`gpulab sync`),
    /// sending only what changed; see [`crate::remote::sync`].
    pub async fn sync(
        &self,
        direction: &crate::remote::sync::SyncDirection,
        options: &crate::remote::sync::SyncOptions,
        reporter: &dyn Reporter,
    ) -> Result<crate::remote::sync::SyncReport> {
        let ssh = self.ssh().await?;
        let result = crate::remote::sync::sync(&ssh, direction, options, reporter).await;
        let _ = ssh.close().await;
        result
    }
}

/// Points a failed SSH connection at `--via kube`.
fn suggest_via_kube(error: Error) -> Error {
    const KUBE: &str =
        "if the workspace runs no sshd, copy through the API server with `gpulab cp --via kube`";
    match error {
        Error::Remote { message, hint } => Error::Remote {
            message,
            hint: Some(match hint {
                Some(hint) => format!("{hint}; {KUBE}"),
                None => KUBE.into(),
            }),
        },
        other => other,
    }
}

async fn provisioner(
    spec: &ValidSpec,
    provider: &Provider,
    binding: Option<ClusterBinding>,
    options: &LabOptions,
) -> Result<Arc<dyn ClusterProvisioner>> {
    match provider {
        Provider::Existing {
            kubeconfig,
            context,
        } => Ok(Arc::new(
            ExistingCluster::new(kubeconfig.clone(), context.clone()).bound_to(binding),
        )),
        #[cfg(feature = "aws")]
        Provider::Aws => Ok(Arc::new(
            crate::provision::aws::AwsProvisioner::connect(spec, options.aws.clone()).await,
        )),
        #[cfg(not(feature = "aws"))]
        Provider::Aws => {
            let _ = (spec, options, binding);
            Err(Error::Provision {
                step: "choose a provider".into(),
                message: "this build of gpulab has no AWS support".into(),
                hint: Some("rebuild with the `aws` feature, or use an existing cluster".into()),
                cause: None,
            })
        }
    }
}

/// The error for `up` on a lab that another provider made.
fn provider_mismatch(name: &str, recorded: &Provider) -> Error {
    let (was, flag) = match recorded {
        Provider::Aws => ("on AWS".to_string(), "without --context"),
        Provider::Existing { context, .. } => (
            format!(
                "on an existing cluster (context {})",
                context.as_deref().unwrap_or("current")
            ),
            "with the same --context",
        ),
    };
    Error::Usage {
        message: format!("lab {name} was brought up {was}; this command would use the other"),
        hint: format!(
            "run it {flag}, or name another lab (--name), or `gpulab down --name {name}` first"
        ),
    }
}

/// How long `down` waits for the cluster to delete the workspace's load balancer and EBS volume (an
/// NLB takes a minute or two).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Run `work` as a reported step that never finds its work already done. Not an `async fn`, so `work`
/// is not held inline before [`reported_step`] boxes it.
fn step<T>(
    reporter: &dyn Reporter,
    name: &str,
    work: impl Future<Output = Result<T>>,
) -> impl Future<Output = Result<T>> {
    reported_step(reporter, name, async {
        work.await.map(|value| (value, false))
    })
}

/// Create gpulab's own SSH key pair (`~/.ssh/gpulab_ed25519`) when the spec found no key to use, as
/// the original `setup-ssh-keys.sh` made one. No file is ever overwritten: the private key is created
/// exclusively, and one that lost its `.pub` gets its public half back from itself.
fn ensure_user_key(spec: &ValidSpec, reporter: &dyn Reporter) -> Result<()> {
    let SshKey::Generate { path } = &spec.ssh_key else {
        return Ok(());
    };
    let public = PathBuf::from(format!("{}.pub", path.display()));
    if public.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::private_files::create_private_dir(dir)?;
    }
    let public_key = match std::fs::read_to_string(path) {
        Ok(private) => {
            use russh::keys::ssh_key::PrivateKey;
            let key = PrivateKey::from_openssh(&private).map_err(|e| Error::Usage {
                message: format!(
                    "{} exists but is not an OpenSSH private key ({e}), and gpulab will not replace it",
                    path.display()
                ),
                hint: "name the key to use with SSH_KEY or --ssh-key, or move that file away".into(),
            })?;
            key.public_key().to_openssh().map_err(|e| {
                Error::io(
                    "encode the public key",
                    std::io::Error::other(e.to_string()),
                )
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (private_key, public_key) =
                crate::workspace::generate_host_key(&format!("gpulab-{}", spec.name()))?;
            write_new_file(path, private_key.as_bytes(), 0o600)?;
            reporter.report(Event::Warning {
                message: format!("created an SSH key pair at {}", path.display()),
            });
            public_key
        }
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    write_new_file(&public, format!("{public_key}\n").as_bytes(), 0o644)
}

/// Write a file that must not exist yet, with `mode` on Unix.
fn write_new_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.create_new(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// What the lab costs per hour with `nodes` GPU nodes: priced from the catalog when gpulab made the
/// cluster, unpriced on someone else's.
fn estimate(spec: &ValidSpec, provider: &Provider, nodes: u32) -> CostEstimate {
    if matches!(provider, Provider::Existing { .. }) {
        return CostEstimate::existing_cluster();
    }
    let mut spec = spec.clone();
    spec.spec.nodes.desired = nodes;
    CostEstimate::for_spec(&spec)
}

fn cost_report(
    spec: &ValidSpec,
    provider: &Provider,
    state: Option<&LabState>,
    now: SystemTime,
) -> CostReport {
    let nodes = state
        .and_then(|s| s.node_history.last())
        .map_or(0, |s| s.nodes);
    let at_nodes = |n: u32| estimate(spec, provider, n);
    let estimate = at_nodes(nodes);
    let (spent, hours) = match state {
        Some(state) => {
            let hours = state.age_hours(now);
            let per_node_hour = at_nodes(1).per_hour - at_nodes(0).per_hour;
            (
                estimate.idle_per_hour * hours + per_node_hour * state.node_hours(now),
                hours,
            )
        }
        None => (0.0, 0.0),
    };
    let guard = match state {
        Some(state) => Guard::parse(&state.spec.autostop).0,
        None => spec.autostop,
    };
    let mut autostop = guard.describe();
    if let Some(budget) = guard.budget_usd {
        autostop.push_str(&format!(" (${:.2} left)", (budget - spent).max(0.0)));
    }
    CostReport {
        per_hour: estimate.per_hour,
        spent,
        hours,
        nodes,
        estimate,
        autostop,
    }
}
