//! Parsing and thresholds against recorded tool outputs (see `testdata/README.md` for their origin).

use super::*;
use crate::catalog;

const T4_QUERY: &str = include_str!("testdata/t4_query.csv");
const T4_SUMMARY: &str = include_str!("testdata/t4_summary.txt");
const T4_LIST: &str = include_str!("testdata/t4_list.txt");
const T4_TORCH: &str = include_str!("testdata/t4_torch.json");
const A10G_QUERY: &str = include_str!("testdata/a10g_query.csv");
const A10G_SUMMARY: &str = include_str!("testdata/a10g_summary.txt");
const A10G_TORCH: &str = include_str!("testdata/a10g_torch.json");
const H100_QUERY: &str = include_str!("testdata/h100_query.csv");
const H100_SUMMARY: &str = include_str!("testdata/h100_summary.txt");
const H100_LIST: &str = include_str!("testdata/h100_list.txt");
const H100_TORCH: &str = include_str!("testdata/h100_torch.json");
const H100_NCCL: &str = include_str!("testdata/h100_nccl.json");

fn torch(json: &str) -> TorchReport {
    serde_json::from_str(json).unwrap()
}

fn vllm_ok() -> VllmSmokeReport {
    serde_json::from_value(serde_json::json!({
        "tool": "vllm", "available": true, "outcome": "ok", "model": "facebook/opt-125m",
        "vllm_version": "0.6.4", "prompts": 16, "output_tokens": 1024, "elapsed_s": 0.9,
        "tokens_per_s": 1137.8, "sample": " Paris"
    }))
    .unwrap()
}

fn status(report: &GpuReport, name: &str) -> CheckStatus {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", report.checks))
        .status
}

fn report(
    instance: &str,
    query: &str,
    summary: &str,
    torch_json: &str,
    nccl: Option<&str>,
) -> GpuReport {
    let instance = catalog::instance(instance).unwrap();
    GpuReport::assess(
        instance,
        instance.gpu_count,
        Thresholds::for_gpu(instance.gpu_model()),
        NvidiaSmiReport::from_outputs(query, summary),
        torch(torch_json),
        nccl.map(|n| serde_json::from_str(n).unwrap()),
        Some(vllm_ok()),
    )
}

#[test]
fn nvidia_smi_t4_a10g_h100() {
    let t4 = parse_nvidia_smi(T4_QUERY, T4_SUMMARY).unwrap();
    assert_eq!(t4.driver_version.as_deref(), Some("535.183.01"));
    assert_eq!(t4.cuda_version.as_deref(), Some("12.2"));
    assert_eq!(
        t4.gpus,
        [SmiGpu {
            index: 0,
            name: "Tesla T4".into(),
            uuid: "GPU-5e1c2a4b-8f0d-3c7e-a912-6b4d0f8e2a17".into(),
            pci_bus_id: "00000000:00:1E.0".into(),
            memory_mib: 15360,
        }]
    );

    let a10g = parse_nvidia_smi(A10G_QUERY, A10G_SUMMARY).unwrap();
    assert_eq!(
        (a10g.driver_version.as_deref(), a10g.cuda_version.as_deref()),
        (Some("550.127.05"), Some("12.4"))
    );
    assert_eq!(
        (a10g.gpus[0].name.as_str(), a10g.gpus[0].memory_mib),
        ("NVIDIA A10G", 23028)
    );

    let h100 = parse_nvidia_smi(H100_QUERY, H100_SUMMARY).unwrap();
    assert_eq!(h100.cuda_version.as_deref(), Some("12.8"));
    assert_eq!(h100.gpus.len(), 8);
    assert!(
        h100.gpus
            .iter()
            .all(|g| g.name == "NVIDIA H100 80GB HBM3" && g.memory_mib == 81559)
    );
    assert_eq!(h100.gpus[7].pci_bus_id, "00000000:CA:00.0");
    assert_eq!(
        h100.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );

    // Without the summary the driver version still comes from the CSV; the CUDA version is unknown.
    let bare = parse_nvidia_smi(T4_QUERY, "").unwrap();
    assert_eq!(
        (bare.driver_version.as_deref(), bare.cuda_version),
        (Some("535.183.01"), None)
    );
}

#[test]
fn nvidia_smi_list_and_bad_input() {
    assert_eq!(
        parse_nvidia_smi_list(T4_LIST),
        [(0, "Tesla T4".to_string())]
    );
    let h100 = parse_nvidia_smi_list(H100_LIST);
    assert_eq!(h100.len(), 8);
    assert_eq!(h100[7], (7, "NVIDIA H100 80GB HBM3".to_string()));
    assert!(parse_nvidia_smi_list("No devices were found\n").is_empty());

    let err = parse_nvidia_smi("0, Tesla T4, [N/A]\n", "").unwrap_err();
    assert!(err.contains("unexpected nvidia-smi line"), "{err}");
    let err =
        parse_nvidia_smi("0, Tesla T4, GPU-x, 00000000:00:1E.0, [N/A], 535.1\n", "").unwrap_err();
    assert!(err.contains("memory.total"), "{err}");
}

#[test]
fn a_healthy_t4_passes_and_skips_bf16() {
    let r = report("g4dn.xlarge", T4_QUERY, T4_SUMMARY, T4_TORCH, None);
    assert!(r.passed(), "{:#?}", r.checks);
    assert_eq!(status(&r, "nvidia-smi"), CheckStatus::Pass);
    assert_eq!(status(&r, "matmul fp16 gpu0"), CheckStatus::Pass);
    assert_eq!(status(&r, "matmul bf16 gpu0"), CheckStatus::Skipped);
    assert_eq!(status(&r, "matmul fp32 gpu0"), CheckStatus::Pass);
    assert_eq!(status(&r, "memory bandwidth gpu0"), CheckStatus::Pass);
    assert_eq!(status(&r, "nccl all-reduce"), CheckStatus::Skipped);
    assert_eq!(status(&r, "vllm generate"), CheckStatus::Pass);
    let fp16 = r
        .checks
        .iter()
        .find(|c| c.name == "matmul fp16 gpu0")
        .unwrap();
    assert_eq!((fp16.expected, fp16.threshold), (Some(65.0), Some(0.30)));
    assert_eq!(fp16.detail, "24.6 TFLOP/s = 38% of 65 (needs 30%), n=8192");
    let rows = r.rows();
    assert_eq!(rows[0].0, "nvidia-smi");
    assert_eq!(rows[0].1, "pass");
    assert_eq!(
        rows[0].2,
        "driver 535.183.01, CUDA 12.2; 1× Tesla T4 (15360 MiB)"
    );
}

#[test]
fn a_throttled_t4_fails_on_the_numbers() {
    let mut slow = torch(T4_TORCH);
    slow.devices[0].matmul[0].tflops = 14.0; // 22 % of 65: a T4 stuck at low clocks
    slow.devices[0].bandwidth.as_mut().unwrap().gbs = 150.0; // 47 % of 320
    let t4 = catalog::instance("g4dn.xlarge").unwrap();
    let r = GpuReport::assess(
        t4,
        1,
        Thresholds::for_gpu(t4.gpu_model()),
        NvidiaSmiReport::from_outputs(T4_QUERY, T4_SUMMARY),
        slow,
        None,
        None,
    );
    assert!(!r.passed());
    let failed: Vec<&str> = r.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["matmul fp16 gpu0", "memory bandwidth gpu0"]);
    assert_eq!(status(&r, "vllm generate"), CheckStatus::Skipped);
}

#[test]
fn a10g_passes_with_bf16() {
    let r = report("g5.xlarge", A10G_QUERY, A10G_SUMMARY, A10G_TORCH, None);
    assert!(r.passed(), "{:#?}", r.checks);
    assert_eq!(status(&r, "matmul bf16 gpu0"), CheckStatus::Pass);
    let bw = r
        .checks
        .iter()
        .find(|c| c.name == "memory bandwidth gpu0")
        .unwrap();
    assert_eq!(
        (bw.measured, bw.expected, bw.threshold),
        (Some(492.7), Some(600.0), Some(0.6))
    );
    // The same figures on a lab that thinks it has an H100 fail: wrong GPU, and far below its peaks.
    let wrong = report("p5.48xlarge", A10G_QUERY, A10G_SUMMARY, A10G_TORCH, None);
    assert!(!wrong.passed());
    assert_eq!(status(&wrong, "nvidia-smi"), CheckStatus::Fail);
}

#[test]
fn eight_h100s_with_nccl() {
    let r = report(
        "p5.48xlarge",
        H100_QUERY,
        H100_SUMMARY,
        H100_TORCH,
        Some(H100_NCCL),
    );
    assert!(r.passed(), "{:#?}", r.checks);
    assert_eq!(r.expected_gpus, 8);
    for i in 0..8 {
        for check in [
            "matmul fp16",
            "matmul bf16",
            "matmul fp32",
            "memory bandwidth",
        ] {
            assert_eq!(status(&r, &format!("{check} gpu{i}")), CheckStatus::Pass);
        }
    }
    let nccl = r
        .checks
        .iter()
        .find(|c| c.name == "nccl all-reduce")
        .unwrap();
    assert_eq!(nccl.status, CheckStatus::Pass);
    assert!(
        nccl.detail.starts_with("bus bandwidth 361.6 GB/s"),
        "{}",
        nccl.detail
    );
    assert!(
        r.rows()[0]
            .2
            .contains("8× NVIDIA H100 80GB HBM3 (81559 MiB)")
    );

    // Seven GPUs visible where eight were asked for, and an all-reduce with a wrong sum: both fail.
    let seven: String = H100_QUERY
        .lines()
        .take(7)
        .map(|l| format!("{l}\n"))
        .collect();
    let mut nccl: NcclReport = serde_json::from_str(H100_NCCL).unwrap();
    nccl.correct = Some(false);
    let p5 = catalog::instance("p5.48xlarge").unwrap();
    let r = GpuReport::assess(
        p5,
        8,
        Thresholds::for_gpu(p5.gpu_model()),
        NvidiaSmiReport::from_outputs(&seven, H100_SUMMARY),
        torch(H100_TORCH),
        Some(nccl),
        None,
    );
    assert_eq!(status(&r, "nvidia-smi"), CheckStatus::Fail);
    assert_eq!(status(&r, "nccl all-reduce"), CheckStatus::Fail);
}

#[test]
fn missing_tools_are_unavailable_and_fail() {
    let t4 = catalog::instance("g4dn.xlarge").unwrap();
    let raw = |json: &str| serde_json::from_str::<SmiRaw>(json).unwrap();
    let smi = NvidiaSmiReport::from_raw(raw(
        r#"{"tool": "nvidia-smi", "available": false, "error": "nvidia-smi not found on PATH"}"#,
    ));
    let no_torch = torch(
        r#"{"tool": "torch", "available": false, "cuda_available": false, "devices": [],
            "error": "PyTorch is not importable: ModuleNotFoundError: No module named 'torch'"}"#,
    );
    let no_vllm: VllmSmokeReport = serde_json::from_str(
        r#"{"tool": "vllm", "available": false, "outcome": "error", "model": "facebook/opt-125m",
            "error": "vLLM is not importable: ModuleNotFoundError: No module named 'vllm'"}"#,
    )
    .unwrap();
    let r = GpuReport::assess(
        t4,
        1,
        Thresholds::for_gpu(t4.gpu_model()),
        smi,
        no_torch,
        None,
        Some(no_vllm),
    );
    assert!(!r.passed());
    for name in [
        "nvidia-smi",
        "pytorch cuda",
        "matmul fp16",
        "matmul fp32",
        "memory bandwidth",
        "vllm generate",
    ] {
        assert_eq!(status(&r, name), CheckStatus::Unavailable, "{name}");
    }
    assert!(r.rows()[0].2.contains("not found"));
    assert!(r.rows()[1].2.contains("No module named 'torch'"));

    // A CPU-only PyTorch: importable, but no CUDA.
    let cpu_only = torch(
        r#"{"tool": "torch", "available": true, "torch_version": "2.5.1+cpu", "cuda_build": null,
            "cuda_available": false, "devices": [],
            "error": "torch.cuda.is_available() is False: this PyTorch build has no CUDA"}"#,
    );
    let r = GpuReport::assess(
        t4,
        1,
        Thresholds::for_gpu(t4.gpu_model()),
        NvidiaSmiReport::from_outputs(T4_QUERY, T4_SUMMARY),
        cpu_only,
        None,
        None,
    );
    assert!(!r.passed());
    assert_eq!(status(&r, "nvidia-smi"), CheckStatus::Pass);
    assert_eq!(status(&r, "pytorch cuda"), CheckStatus::Unavailable);
    assert!(r.rows()[1].2.contains("no CUDA"));
}

#[test]
fn an_undownloadable_model_is_its_own_outcome() {
    let mut r = report("g4dn.xlarge", T4_QUERY, T4_SUMMARY, T4_TORCH, None);
    let offline: VllmSmokeReport = serde_json::from_str(
        r#"{"tool": "vllm", "available": true, "outcome": "model_unavailable", "model": "facebook/opt-125m",
            "error": "could not download facebook/opt-125m (no network access to the Hugging Face Hub, and no cached copy?): LocalEntryNotFoundError: ..."}"#,
    )
    .unwrap();
    r = GpuReport::assess(
        catalog::instance("g4dn.xlarge").unwrap(),
        1,
        r.thresholds,
        r.nvidia_smi,
        r.torch,
        None,
        Some(offline),
    );
    assert_eq!(status(&r, "vllm generate"), CheckStatus::ModelUnavailable);
    assert_eq!(CheckStatus::ModelUnavailable.label(), "no model");
    assert!(r.passed(), "no download says nothing about the GPU");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["checks"].as_array().unwrap().last().unwrap()["status"],
        "model-unavailable"
    );
}

#[test]
fn script_output_parsing() {
    let ok = parse_script_output(
        b"INFO lots of vLLM logging\nGPULAB_JSON {\"a\": 1}\n",
        b"",
        0,
    )
    .unwrap();
    assert_eq!(ok["a"], 1);
    let missing =
        parse_script_output(b"", b"gpulab: no python3 in the workspace\n", 127).unwrap_err();
    assert!(
        missing.starts_with("no Python in the workspace"),
        "{missing}"
    );
    let crash = parse_script_output(b"", b"Segmentation fault\n", 139).unwrap_err();
    assert!(
        crash.contains("139") && crash.contains("Segmentation fault"),
        "{crash}"
    );
}

#[test]
fn thresholds_follow_the_gpu() {
    let t4 = Thresholds::for_gpu(catalog::gpu("t4").unwrap());
    let h100 = Thresholds::for_gpu(catalog::gpu("h100").unwrap());
    assert!(t4.matmul_fp16 < h100.matmul_fp16);
    assert_eq!(
        h100,
        Thresholds {
            matmul_fp16: 0.5,
            matmul_fp32: 0.4,
            bandwidth: 0.6
        }
    );
    assert!(!supports_bf16(catalog::gpu("t4").unwrap()));
    assert!(!supports_bf16(catalog::gpu("v100").unwrap()));
    assert!(supports_bf16(catalog::gpu("a10g").unwrap()));
}
