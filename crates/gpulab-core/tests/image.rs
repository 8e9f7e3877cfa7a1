//! The lab's ECR repository against moto: create (tagged), find again, push credentials, delete with
//! `down`. The image builds themselves (docker, kaniko) need a docker daemon or a cluster that runs Jobs
//! and a real registry, none of which this machine has; their inputs are unit-tested in `image::tests`.
#![cfg(feature = "aws")]

use std::collections::BTreeMap;

use aws_credential_types::Credentials;
use gpulab_core::image::ecr::{EcrClient, RepositoryDeletion};
use gpulab_core::naming::LabId;
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
    let id = LabId::generate().unwrap();
    let tags = BTreeMap::from([
        ("gpulab.io/lab".to_string(), "dev".to_string()),
        ("gpulab.io/lab-id".to_string(), id.to_string()),
        ("gpulab.io/managed".to_string(), "true".to_string()),
        ("team".to_string(), "ml".to_string()),
    ]);

    assert_eq!(ecr.describe_repository("gpulab/dev").await.unwrap(), None);
    let repo = ecr
        .ensure_repository("gpulab/dev", &tags, &id)
        .await
        .unwrap();
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
    let again = ecr
        .ensure_repository("gpulab/dev", &tags, &id)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.uri, repo.uri);

    let login = ecr.login().await.unwrap();
    assert_eq!(login.username, "AWS");
    assert!(!login.password.is_empty());
    assert!(
        !format!("{login:?}").contains(&login.password),
        "the password never prints"
    );

    // Another lab of the same name (another ID) neither pushes to it nor deletes it.
    let other = LabId::generate().unwrap();
    let err = ecr
        .ensure_repository("gpulab/dev", &tags, &other)
        .await
        .unwrap_err();
    assert!(matches!(err, gpulab_core::Error::Ownership { .. }), "{err}");
    assert_eq!(
        ecr.delete_owned_repository("gpulab/dev", &other)
            .await
            .unwrap(),
        RepositoryDeletion::NotOurs
    );
    assert!(
        ecr.describe_repository("gpulab/dev")
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(
        ecr.delete_owned_repository("gpulab/dev", &id)
            .await
            .unwrap(),
        RepositoryDeletion::Deleted
    );
    assert_eq!(
        ecr.delete_owned_repository("gpulab/dev", &id)
            .await
            .unwrap(),
        RepositoryDeletion::Absent
    );
    assert_eq!(ecr.describe_repository("gpulab/dev").await.unwrap(), None);
}

/// ECR's refusals, which moto never gives, read like every other AWS error: the step, the service's code
/// and message, and what to do (served by wiremock in ECR's JSON error format).
#[tokio::test]
async fn ecr_refusals_name_the_step_the_code_and_what_to_do() {
    use gpulab_core::Error;
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    let refuse = |operation: &str, code: &str, message: &str| {
        Mock::given(method("POST"))
            .and(header(
                "x-amz-target",
                format!("AmazonEC2ContainerRegistry_V20150921.{operation}").as_str(),
            ))
            .respond_with(
                ResponseTemplate::new(400)
                    .insert_header("content-type", "application/x-amz-json-1.1")
                    .set_body_json(serde_json::json!({ "__type": code, "message": message })),
            )
    };
    refuse(
        "CreateRepository",
        "AccessDeniedException",
        "not authorized to perform: ecr:CreateRepository",
    )
    .mount(&server)
    .await;
    refuse(
        "DescribeRepositories",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    .mount(&server)
    .await;

    let options = SdkOptions {
        endpoint_url: Some(server.uri()),
        credentials: Some(Credentials::new("testing", "testing", None, None, "test")),
        ..Default::default()
    };
    let ecr = EcrClient::new(&load_sdk_config("us-west-2", &options).await).unwrap();

    match ecr
        .ensure_repository("gpulab/dev", &BTreeMap::new(), &LabId::unassigned())
        .await
        .unwrap_err()
    {
        Error::Provision {
            step,
            message,
            hint,
            cause,
        } => {
            assert_eq!(step, "ECR CreateRepository");
            // The service's answer stays matchable: its code and status, the SDK's error below.
            let cause = cause.expect("the service's answer");
            assert_eq!(cause.code.as_deref(), Some("AccessDeniedException"));
            assert_eq!(cause.http_status, Some(400));
            assert_eq!(
                message,
                "AccessDeniedException: not authorized to perform: ecr:CreateRepository"
            );
            let hint = hint.expect("a hint");
            assert!(
                hint.contains("ecr:CreateRepository and ecr:TagResource"),
                "{hint}"
            );
        }
        other => panic!("expected a provision error, got {other:?}"),
    }
    match ecr.describe_repository("gpulab/dev").await.unwrap_err() {
        Error::Credentials { message, hint } => {
            assert!(
                message.starts_with("ECR DescribeRepositories: UnrecognizedClientException"),
                "{message}"
            );
            assert!(hint.contains("AWS_PROFILE"), "{hint}");
        }
        other => panic!("expected a credentials error, got {other:?}"),
    }
}
