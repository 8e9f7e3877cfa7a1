//! The GPU validation suite run for real: through the API server's exec on the Kubernetes emulator, and
//! on this machine (`gpulab test --local`) through `LocalExec`. The emulator runs commands on this
//! machine too, which has no GPU, no nvidia-smi and no PyTorch: the report must say so and fail, never
//! pass.

use gpulab_core::catalog;
use gpulab_core::checks::{CheckOptions, CheckStatus, run_gpu_checks, run_local_gpu_checks};
use gpulab_core::remote::api_server::ApiServerExec;
use gpulab_testkit::LabDir;
use gpulab_testkit::kube::KubeEmulator;
use gpulab_testkit::ready_lab::ReadyLab;

/// The ready lab, taken apart the way these tests use it.
async fn ready_lab() -> (KubeEmulator, LabDir, ApiServerExec) {
    let lab = ReadyLab::start().await;
    let exec = lab.exec();
    (lab.emu, lab.dir, exec)
}

fn have(program: &str) -> bool {
    gpulab_testkit::which(program).is_some()
}

fn python_has(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn without_a_gpu_the_report_says_what_is_missing_and_fails() {
    if have("nvidia-smi") || python_has("torch") {
        eprintln!("this machine has nvidia-smi or PyTorch; the test is about one without");
        return;
    }
    let (_emu, _home, exec) = ready_lab().await;
    let g4dn = catalog::instance("g4dn.12xlarge").unwrap();
    let options = CheckOptions {
        repeats: 3,
        ..Default::default()
    };
    let report = run_gpu_checks(&exec, g4dn, &options).await.unwrap();

    assert!(!report.passed(), "{:#?}", report.checks);
    assert_eq!(report.expected_gpus, 4);
    let check = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}: {:#?}", report.checks))
    };
    let smi = check("nvidia-smi");
    assert_eq!(smi.status, CheckStatus::Unavailable);
    assert!(
        smi.detail.contains("nvidia-smi not found"),
        "{}",
        smi.detail
    );
    let torch = check("pytorch cuda");
    assert_eq!(torch.status, CheckStatus::Unavailable);
    assert!(
        torch.detail.contains("No module named 'torch'"),
        "{}",
        torch.detail
    );
    for name in ["matmul fp16", "matmul fp32", "memory bandwidth"] {
        assert_eq!(check(name).status, CheckStatus::Unavailable, "{name}");
    }
    // Four GPUs expected: the all-reduce ran, and says PyTorch is missing.
    let nccl = check("nccl all-reduce");
    assert_eq!(nccl.status, CheckStatus::Unavailable);
    assert!(nccl.detail.contains("PyTorch"), "{}", nccl.detail);
    let vllm = check("vllm generate");
    assert_eq!(vllm.status, CheckStatus::Unavailable);
    assert!(
        vllm.detail.contains("vLLM is not importable"),
        "{}",
        vllm.detail
    );
    assert!(report.checks.iter().all(|c| c.status != CheckStatus::Pass));
}

#[tokio::test]
async fn vllm_bench_and_readiness_speak_openai_to_the_server() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "object": "list", "data": [{"id": "facebook/opt-125m", "object": "model"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "cmpl-1", "object": "text_completion", "model": "facebook/opt-125m",
            "choices": [{"index": 0, "text": " a GPU", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28}
        })))
        .expect(10)
        .mount(&server)
        .await;

    let (_emu, _home, exec) = ready_lab().await;
    let port = server.address().port();
    if have("curl") {
        assert!(gpulab_core::vllm::is_ready(&exec, port).await.unwrap());
    }
    let options = gpulab_core::vllm::BenchOptions {
        url: server.uri(),
        requests: 10,
        concurrency: 4,
        max_tokens: 16,
        ..Default::default()
    };
    let report = gpulab_core::vllm::bench(&exec, &options).await.unwrap();
    assert_eq!(report.error, None);
    assert_eq!(report.model.as_deref(), Some("facebook/opt-125m"));
    assert_eq!((report.completed, report.failed), (10, 0));
    assert_eq!((report.output_tokens, report.prompt_tokens), (160, 120));
    assert!(report.output_tokens_per_s > 0.0 && report.latency_p50_s.is_some());
    let sent = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&sent.last().unwrap().body).unwrap();
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["ignore_eos"], true);

    // Nothing listening: not ready, and the benchmark says the server does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = gpulab_core::vllm::BenchOptions {
        url: format!("http://127.0.0.1:{port}"),
        ..options
    };
    if have("curl") {
        assert!(!gpulab_core::vllm::is_ready(&exec, port).await.unwrap());
    }
    let report = gpulab_core::vllm::bench(&exec, &options).await.unwrap();
    assert!(report.error.unwrap().contains("does not answer /v1/models"));
    assert!(!gpulab_core::vllm::is_running(&exec).await.unwrap() || have("vllm"));
}

#[tokio::test]
async fn slurm_detects_the_pod_and_refuses_without_gpus() {
    use gpulab_core::slurm;

    let (_emu, _home, exec) = ready_lab().await;
    let resources = slurm::detect(&exec).await.unwrap();
    assert!(
        resources.cpus >= 1 && resources.memory_mib > 0,
        "{resources:?}"
    );
    assert!(!resources.hostname.is_empty());
    if have("nvidia-smi") {
        return;
    }
    assert_eq!(resources.gpu_count(), 0);
    let err = slurm::setup(&exec, &slurm::SetupOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no GPU in the workspace"), "{err}");
    if !have("sinfo") {
        assert_eq!(
            slurm::state(&exec).await.unwrap(),
            slurm::SlurmState::NotInstalled
        );
    }
}

/// Stand-ins for torch, vLLM and the Hub (tests/fake_python): the scripts' control flow and output
/// format through the real exec path, with figures that say nothing about any GPU.
fn fake_python_env(gpus: u32, hub: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_python");
    vec![
        ("PYTHONPATH".into(), dir.display().to_string()),
        ("FAKE_GPUS".into(), gpus.to_string()),
        ("FAKE_HUB".into(), hub.into()),
        // No __pycache__ left in the source tree.
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
    ]
}

/// [`fake_python_env`] with the stand-in nvidia-smi first on the scripts' PATH.
fn fake_gpu_env(gpus: u32, hub: &str) -> Vec<(String, String)> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_python/bin");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut env = fake_python_env(gpus, hub);
    env.push(("PATH".into(), format!("{}:{path}", bin.display())));
    env
}

#[tokio::test]
async fn the_scripts_run_end_to_end_against_stand_in_libraries() {
    if have("nvidia-smi") {
        eprintln!("this machine has nvidia-smi; the test is about one without");
        return;
    }
    let (_emu, _home, exec) = ready_lab().await;
    let g4dn = catalog::instance("g4dn.12xlarge").unwrap();
    let options = CheckOptions {
        repeats: 3,
        env: fake_python_env(4, "offline"),
        ..Default::default()
    };
    let report = run_gpu_checks(&exec, g4dn, &options).await.unwrap();
    let status = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}: {:#?}", report.checks))
            .status
    };

    // nvidia-smi is still missing, so the report fails whatever the (fake) benchmarks say.
    assert!(!report.passed());
    assert_eq!(status("nvidia-smi"), CheckStatus::Unavailable);
    assert_eq!(
        status("pytorch cuda"),
        CheckStatus::Pass,
        "{:#?}",
        report.checks
    );
    assert_eq!(report.torch.devices.len(), 4);
    for i in 0..4 {
        let device = &report.torch.devices[i];
        let dtypes: Vec<&str> = device.matmul.iter().map(|m| m.dtype.as_str()).collect();
        assert_eq!(dtypes, ["float16", "bfloat16", "float32"], "gpu{i}");
        assert!(
            device.bandwidth.is_some() && device.errors.is_empty(),
            "{device:?}"
        );
        assert_ne!(
            status(&format!("matmul fp16 gpu{i}")),
            CheckStatus::Unavailable
        );
    }
    // One process per GPU, each with its rank, and rank 0's result read back.
    let nccl = report.nccl.as_ref().unwrap();
    assert_eq!(
        (nccl.world_size, nccl.correct),
        (Some(4), Some(true)),
        "{nccl:?}"
    );
    assert_eq!(status("nccl all-reduce"), CheckStatus::Pass);
    // No Hub: its own outcome, not a pass and not a GPU failure.
    assert_eq!(status("vllm generate"), CheckStatus::ModelUnavailable);
    assert!(
        report
            .vllm
            .as_ref()
            .unwrap()
            .error
            .as_ref()
            .unwrap()
            .contains("could not download facebook/opt-125m")
    );

    // With the Hub answering, the smoke test generates.
    let options = CheckOptions {
        repeats: 3,
        nccl: false,
        env: fake_python_env(1, "online"),
        ..Default::default()
    };
    let report = run_gpu_checks(&exec, catalog::instance("g4dn.xlarge").unwrap(), &options)
        .await
        .unwrap();
    let vllm = report.vllm.as_ref().unwrap();
    assert_eq!(
        (vllm.outcome.as_deref(), vllm.output_tokens),
        (Some("ok"), Some(16 * 64))
    );
    assert!(report.nccl.is_none());
}

#[tokio::test]
async fn on_this_machine_without_a_gpu_each_check_says_so() {
    if have("nvidia-smi") || python_has("torch") {
        eprintln!("this machine has nvidia-smi or PyTorch; the test is about one without");
        return;
    }
    let options = CheckOptions {
        repeats: 3,
        ..Default::default()
    };
    let report = run_local_gpu_checks(&options).await.unwrap();
    assert!(!report.passed(), "{:#?}", report.checks);
    assert_eq!(
        (report.instance.as_deref(), report.gpu_model.as_deref()),
        (None, None)
    );
    assert_eq!(report.expected_gpus, 0);
    let detail = |name: &str| {
        let c = report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}: {:#?}", report.checks));
        (c.status, c.detail.as_str())
    };
    assert_eq!(
        detail("nvidia-smi"),
        (
            CheckStatus::Unavailable,
            "nvidia-smi not found on PATH: no NVIDIA driver on this machine, or its utilities are not on PATH"
        )
    );
    assert_eq!(detail("pytorch cuda").0, CheckStatus::Unavailable);
    assert!(detail("pytorch cuda").1.contains("No module named 'torch'"));
    assert_eq!(
        detail("nccl all-reduce"),
        (
            CheckStatus::Skipped,
            "no GPU visible: nothing to all-reduce across"
        )
    );
    assert_eq!(detail("vllm generate").0, CheckStatus::Unavailable);
    assert!(report.checks.iter().all(|c| c.status != CheckStatus::Pass));

    // No Python at all: the same lines, each saying so.
    let options = CheckOptions {
        python: Some("/nonexistent/python3".into()),
        vllm_model: None,
        ..options
    };
    let report = run_local_gpu_checks(&options).await.unwrap();
    assert!(!report.passed());
    let smi = &report.checks[0];
    assert!(
        smi.detail.starts_with(
            "nvidia-smi check: no Python to run it: gpulab: /nonexistent/python3: not found"
        ),
        "{}",
        smi.detail
    );
}

#[tokio::test]
async fn on_this_machine_the_scripts_run_end_to_end_with_telemetry() {
    if have("nvidia-smi") {
        eprintln!("this machine has nvidia-smi; the test is about one without");
        return;
    }
    // Stand-ins for nvidia-smi and PyTorch, two "Fake GPU"s: the gpulab catalog has no such model,
    // so every figure is measured, none judged; the control flow and output formats are the real ones.
    let options = CheckOptions {
        repeats: 3,
        vllm_model: None,
        env: fake_gpu_env(2, "offline"),
        ..Default::default()
    };
    let report = run_local_gpu_checks(&options).await.unwrap();
    let status = |name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}: {:#?}", report.checks))
            .status
    };
    assert!(report.passed(), "{:#?}", report.checks);
    assert_eq!(
        (report.expected_gpus, report.gpu_model.as_deref()),
        (2, None)
    );
    assert_eq!(status("nvidia-smi"), CheckStatus::Pass);
    assert!(
        report.checks[0]
            .detail
            .ends_with("2× Fake GPU 0 (16384 MiB), Fake GPU 1 (16384 MiB); not in gpulab's catalog: figures are measured, not judged"),
        "{}",
        report.checks[0].detail
    );
    // nvidia-smi's state (through the newer throttle-reasons field name), and each figure's telemetry.
    let state = &report.nvidia_smi.state;
    assert_eq!(state.len(), 2);
    assert_eq!(
        (
            state[1].power_limit_w,
            state[1].throttle_reasons,
            state[1].mig
        ),
        (Some(400.0), Some(4), Some(false))
    );
    for i in 0..2 {
        assert_eq!(
            status(&format!("matmul fp16 gpu{i}")),
            CheckStatus::Measured
        );
        assert_eq!(
            status(&format!("memory bandwidth gpu{i}")),
            CheckStatus::Measured
        );
        let device = &report.torch.devices[i];
        let telemetry = device.matmul[0].telemetry.as_ref().expect("telemetry");
        assert!(telemetry.samples >= 1, "{telemetry:?}");
        assert_eq!(
            (
                telemetry.sm_clock_mhz,
                telemetry.power_limit_w,
                telemetry.throttle_reasons
            ),
            (Some(1410.0), Some(400.0), Some(4))
        );
        let detail = &report
            .checks
            .iter()
            .find(|c| c.name == format!("matmul fp32 gpu{i}"))
            .unwrap()
            .detail;
        assert!(
            detail
                .contains("; SM 1410/1410 MHz, 250/400 W, 45 C, throttled: power cap; not judged"),
            "{detail}"
        );
    }
    assert_eq!(status("nccl all-reduce"), CheckStatus::Pass);
}
