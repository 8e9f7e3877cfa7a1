//! The lab's ECR repository against moto: create (tagged), find again, push credentials, delete with
//! `down`. The image builds themselves (docker, kaniko) need a docker daemon or a cluster that runs Jobs
//! and a real registry, none of which this machine has; their inputs are unit-tested in `image::tests`.
#![cfg(feature = "aws")]

use std::collections::BTreeMap;

use aws_credential_types::Credentials;
use gpulab_core::image::ecr::EcrClient;
use gpulab_core::provision::aws::{SdkOptions, load_sdk_config};
use gpulab_testkit::moto::MotoServer;

#[tokio::test]
async fn the_lab_repository_is_created_tagged_and_deleted() {
    let moto = match MotoServer::try_start() {
        Ok(moto) => moto,
        Err(e) => {
            eprintln!("moto is not available here ({e}); skipping");
            return;
        }
    };
    let options = SdkOptions {
        endpoint_url: Some(moto.url()),
        credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
        ..Default::default()
    };
    let config = load_sdk_config("us-west-2", &options).await;
    let ecr = EcrClient::new(&config).unwrap();
    let tags = BTreeMap::from([
        ("gpulab.io/lab".to_string(), "dev".to_string()),
        ("gpulab.io/managed".to_string(), "true".to_string()),
        ("team".to_string(), "ml".to_string()),
    ]);

    assert_eq!(ecr.describe_repository("gpulab/dev").await.unwrap(), None);
    let repo = ecr.ensure_repository("gpulab/dev", &tags).await.unwrap();
    assert!(repo.created);
    assert_eq!(repo.name, "gpulab/dev");
    assert!(
        repo.uri
            .ends_with(".dkr.ecr.us-west-2.amazonaws.com/gpulab/dev"),
        "{}",
        repo.uri
    );
    assert_eq!(repo.registry(), repo.uri.trim_end_matches("/gpulab/dev"));
    assert_eq!(ecr.list_tags(&repo.arn).await.unwrap(), tags);

    // A second `image build` finds it.
    let again = ecr.ensure_repository("gpulab/dev", &tags).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.uri, repo.uri);

    let login = ecr.login().await.unwrap();
    assert_eq!(login.username, "AWS");
    assert!(!login.password.is_empty());
    assert!(
        !format!("{login:?}").contains(&login.password),
        "the password never prints"
    );

    assert!(ecr.delete_repository("gpulab/dev").await.unwrap());
    assert!(!ecr.delete_repository("gpulab/dev").await.unwrap());
    assert_eq!(ecr.describe_repository("gpulab/dev").await.unwrap(), None);
}
