//! Building the image in the cluster: a kaniko Job that reads the Dockerfile from a ConfigMap and pushes
//! to ECR through kaniko's built-in ECR credential helper (`credsStore: ecr-login` in its docker config).
//! It runs as the lab's image-build service account, whose EKS Pod Identity association gives it the
//! image-build role (push to the lab's repository only). The node role is not used: AL2023 nodes set the
//! instance metadata hop limit to 1, so pods cannot reach it
//! (<https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html>).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, KeyToPath, Pod, PodSpec, PodTemplateSpec,
    ResourceRequirements, ServiceAccount, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};

use crate::capacity::IMAGE_BUILD;
use crate::cluster::{Deletion, changes_of, cluster_error, delete_owned};
use crate::events::{Reporter, reported_step};
use crate::naming::{GPU_TAINT, KubeNames, LAB_ID_KEY, LabId, kube_labels};
use crate::spec::ValidSpec;
use crate::wait::{self, Backoff, Check, Wait};
use crate::{Error, Result};
use gpulab_model::manifests::{env_var, volume_mount};

/// The kaniko executor image (the last release of the original project, pinned).
pub const KANIKO_IMAGE: &str = "gcr.io/kaniko-project/executor:v1.23.2";

/// One in-cluster build: what to build and where to push it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KanikoBuild {
    /// Namespace of the ConfigMap and the Job (the lab's).
    pub namespace: String,
    /// Name of both the ConfigMap and the Job.
    pub name: String,
    /// The service account the build runs as (its Pod Identity association grants the push).
    pub service_account: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The image reference to push, `<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`.
    pub destination: String,
    /// The AWS region of the registry.
    pub region: String,
    /// The lab's ID: a previous build's objects are replaced only when they carry it.
    pub id: LabId,
    /// Labels on both objects (the lab's).
    pub labels: BTreeMap<String, String>,
}

impl KanikoBuild {
    /// A build for lab `id` of `spec`, in its namespace.
    pub fn for_spec(spec: &ValidSpec, id: &LabId, dockerfile: String, destination: String) -> Self {
        let names = KubeNames::new(&spec.spec);
        KanikoBuild {
            namespace: names.namespace,
            name: format!("{}-image-build", spec.name()),
            service_account: names.image_build_account,
            dockerfile,
            destination,
            region: spec.spec.region.clone(),
            id: id.clone(),
            labels: kube_labels(&spec.spec, id),
        }
    }

    fn meta(&self) -> ObjectMeta {
        self.meta_named(&self.name)
    }

    fn meta_named(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels.clone()),
            ..Default::default()
        }
    }
}

/// The service account the build runs as.
pub fn kaniko_service_account(build: &KanikoBuild) -> ServiceAccount {
    ServiceAccount {
        metadata: build.meta_named(&build.service_account),
        ..Default::default()
    }
}

/// The ConfigMap with the Dockerfile (the build context) and kaniko's docker config.
pub fn kaniko_config_map(build: &KanikoBuild) -> ConfigMap {
    ConfigMap {
        metadata: build.meta(),
        data: Some(BTreeMap::from([
            ("Dockerfile".to_string(), build.dockerfile.clone()),
            (
                "config.json".to_string(),
                "{\"credsStore\": \"ecr-login\"}\n".to_string(),
            ),
        ])),
        ..Default::default()
    }
}

/// The kaniko Job: one try, an hour at most, tolerating the GPU taint (a lab may have only GPU nodes)
/// without asking for a GPU, and removed an hour after it finishes.
pub fn kaniko_job(build: &KanikoBuild) -> Job {
    let config_volume = |name: &str, key: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: build.name.clone(),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: key.into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = Container {
        name: "kaniko".into(),
        image: Some(KANIKO_IMAGE.into()),
        args: Some(vec![
            "--dockerfile=/context/Dockerfile".into(),
            "--context=dir:///context".into(),
            format!("--destination={}", build.destination),
            format!("--custom-platform={}", super::PLATFORM),
            // The CUDA and PyTorch layers are large: uncompressed caching and redo snapshots keep
            // kaniko's memory use down.
            "--compressed-caching=false".into(),
            "--snapshot-mode=redo".into(),
            "--push-retry=3".into(),
        ]),
        env: Some(vec![
            env_var("AWS_SDK_LOAD_CONFIG", "true"),
            env_var("AWS_REGION", &build.region),
            env_var("DOCKER_CONFIG", "/kaniko/.docker"),
        ]),
        volume_mounts: Some(vec![
            volume_mount("context", "/context", true),
            volume_mount("docker-config", "/kaniko/.docker", true),
        ]),
        // Requests are the scheduler's minimum: small enough to fit beside an "auto"-sized workspace on
        // the lab's one node (which leaves exactly this free), and no limits, so the build may use any
        // CPU and memory the workspace leaves idle.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(IMAGE_BUILD.cpu_quantity())),
                (
                    "memory".to_string(),
                    Quantity(IMAGE_BUILD.memory_quantity()),
                ),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (taint_key, _, taint_effect) = GPU_TAINT;
    Job {
        metadata: build.meta(),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(3600),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(build.labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(build.service_account.clone()),
                    containers: vec![container],
                    volumes: Some(vec![
                        config_volume("context", "Dockerfile"),
                        config_volume("docker-config", "config.json"),
                    ]),
                    tolerations: Some(vec![Toleration {
                        key: Some(taint_key.into()),
                        operator: Some("Exists".into()),
                        effect: Some(taint_effect.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Run the build in the cluster: replace the ConfigMap and any previous Job of the same name, start the
/// Job, and wait until it succeeds or fails (with the build's log in the error).
pub async fn build_in_cluster(
    client: &kube::Client,
    build: &KanikoBuild,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<()> {
    let step = "build image (kaniko)";
    reported_step(reporter, step, async {
        run_job(client, build, timeout, step, reporter)
            .await
            .map(|()| ((), false))
    })
    .await
}

/// [`build_in_cluster`]'s work, reported as the step `step`.
async fn run_job(
    client: &kube::Client,
    build: &KanikoBuild,
    timeout: Duration,
    step: &str,
    reporter: &dyn Reporter,
) -> Result<()> {
    let started = Instant::now();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &build.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &build.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &build.namespace);
    let what = |verb: &str| format!("{verb} {}/{}", build.namespace, build.name);

    // A Job's template cannot change: delete the lab's previous one (and its pods) first. Same-named
    // objects that are not the lab's stop the build instead.
    let not_ours_named = |kind: &str, name: &str| Error::Ownership {
        resource: format!("{kind} {}/{name}", build.namespace),
        message: format!("it lacks the label {LAB_ID_KEY}={}", build.id),
        hint: "someone else made it: remove it yourself, or build with docker".into(),
    };
    let not_ours = |kind: &str| not_ours_named(kind, &build.name);

    // The service account is kept between builds (its Pod Identity association names it).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &build.namespace);
    match accounts
        .get_opt(&build.service_account)
        .await
        .map_err(|e| cluster_error(&what("get service account"), e))?
    {
        Some(account) if !build.id.owns_map(account.metadata.labels.as_ref()) => {
            return Err(not_ours_named("ServiceAccount", &build.service_account));
        }
        Some(_) => {}
        None => {
            accounts
                .create(&PostParams::default(), &kaniko_service_account(build))
                .await
                .map_err(|e| cluster_error(&what("create service account"), e))?;
        }
    }
    match delete_owned(&jobs, &build.name, &build.id, DeleteParams::foreground()).await? {
        Deletion::Deleted => {
            let gone = format!("the previous build Job {} to be deleted", build.name);
            let wait = Wait {
                step,
                what: &gone,
                timeout: timeout.saturating_sub(started.elapsed()),
                backoff: Backoff::fixed(Duration::from_secs(1)),
            };
            let changes = changes_of(&jobs, &build.name).await;
            let check = || async {
                let job = jobs.get_opt(&build.name).await;
                Ok(match job.map_err(|e| cluster_error(&what("get job"), e))? {
                    Some(_) => Check::Pending(format!("Job {} (deleting)", build.name)),
                    None => Check::Done(()),
                })
            };
            wait::until_woken(reporter, wait, check, changes).await?;
        }
        Deletion::Absent => {}
        Deletion::NotOurs => return Err(not_ours("Job")),
    }
    if delete_owned(&maps, &build.name, &build.id, DeleteParams::default()).await?
        == Deletion::NotOurs
    {
        return Err(not_ours("ConfigMap"));
    }
    maps.create(&PostParams::default(), &kaniko_config_map(build))
        .await
        .map_err(|e| cluster_error(&what("create config map"), e))?;
    jobs.create(&PostParams::default(), &kaniko_job(build))
        .await
        .map_err(|e| cluster_error(&what("create job"), e))?;

    let built = format!("the image build Job {}", build.name);
    let wait = Wait {
        step,
        what: &built,
        timeout: timeout.saturating_sub(started.elapsed()),
        backoff: Backoff::fixed(Duration::from_secs(5)),
    };
    // The Job's changes (its pod finished, it succeeded or failed) wake the wait at once.
    let changes = changes_of(&jobs, &build.name).await;
    let check = || async {
        let job = jobs
            .get(&build.name)
            .await
            .map_err(|e| cluster_error(&what("get job"), e))?;
        let status = job.status.unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            return Ok(Check::Done(()));
        }
        if status.failed.unwrap_or(0) > 0 {
            let log = build_log(&pods, &build.name).await;
            return Err(Error::Workspace {
                message: format!("the image build failed; kaniko's log ends:\n{log}"),
                hint: Some(format!(
                    "the push needs the Pod Identity association of {}/{} (made by `gpulab up` with \
                     the eks-pod-identity-agent addon); on a cluster gpulab did not make, build with \
                     docker instead",
                    build.namespace, build.service_account
                )),
            });
        }
        let active = status.active.unwrap_or(0);
        Ok(Check::Pending(format!(
            "Job {} ({active} active)",
            build.name
        )))
    };
    wait::until_woken(reporter, wait, check, changes).await
}

/// The last lines of the build pod's log, or why there are none.
async fn build_log(pods: &Api<Pod>, job: &str) -> String {
    let selector = ListParams::default().labels(&format!("job-name={job}"));
    let Ok(list) = pods.list(&selector).await else {
        return "(the build pod could not be listed)".into();
    };
    let Some(name) = list.items.iter().find_map(|p| p.metadata.name.clone()) else {
        return "(no build pod)".into();
    };
    let params = LogParams {
        tail_lines: Some(40),
        ..Default::default()
    };
    pods.logs(&name, &params)
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"))
}
