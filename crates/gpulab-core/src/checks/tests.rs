//! Parsing and verdicts against recorded tool outputs (see `testdata/README.md` for which are captured
//! from real runs and which are constructed).

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
const H100_STATE: &str = include_str!("testdata/h100_state.csv");
const T4_STATE: &str = include_str!("testdata/t4_state.csv");
// Captured on a machine without a GPU, driver, PyTorch or vLLM (real runs).
const CPU_ONLY_SMI: &str = include_str!("testdata/cpu_only_nvidia_smi.out");
const CPU_ONLY_TORCH: &str = include_str!("testdata/cpu_only_torch.out");
const CPU_ONLY_VLLM: &str = include_str!("testdata/cpu_only_vllm.out");

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
        &Reference::instance(instance, instance.gpu_count),
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
    assert_eq!((fp16.expected, fp16.threshold), (Some(65.0), Some(0.25)));
    assert_eq!(fp16.fraction.map(|f| (f * 1000.0).round()), Some(378.0));
    assert_eq!(
        fp16.detail,
        "24.6 TFLOP/s = 38% of the 65 TFLOP/s dense fp16 peak (passes at 25%); n=8192"
    );
    assert_eq!(r.instance.as_deref(), Some("g4dn.xlarge"));
    assert_eq!(r.gpu_model.as_deref(), Some("NVIDIA T4"));
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
        &Reference::instance(t4, 1),
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
        &Reference::instance(p5, 8),
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
        &Reference::instance(t4, 1),
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
        &Reference::instance(t4, 1),
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
        &Reference::instance(catalog::instance("g4dn.xlarge").unwrap(), 1),
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
    assert_eq!(
        missing,
        "no Python to run it: gpulab: no python3 in the workspace"
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
            matmul_fp16: 0.45,
            matmul_fp32: 0.4,
            bandwidth: 0.6
        }
    );
    assert_eq!(Thresholds::for_gpu(catalog::gpu("h200").unwrap()), h100);
    assert_eq!(
        Thresholds::for_gpu(catalog::gpu("a100-80gb").unwrap()).matmul_fp16,
        0.5
    );
    // Every fraction leaves room: no GPU needs more than 60 % of any datasheet peak to pass.
    for gpu in catalog::gpus() {
        let t = Thresholds::for_gpu(gpu);
        for f in [t.matmul_fp16, t.matmul_fp32, t.bandwidth] {
            assert!(f > 0.2 && f <= 0.6, "{}: {f}", gpu.id);
        }
    }
    assert!(!supports_bf16(catalog::gpu("t4").unwrap()));
    assert!(!supports_bf16(catalog::gpu("v100").unwrap()));
    assert!(supports_bf16(catalog::gpu("a10g").unwrap()));
}

/// A constructed [`Telemetry`] for a benchmark: SM clock, power and throttle reasons while it ran.
fn telemetry(sm: f64, max_sm: f64, power: f64, limit: f64, temp: f64, reasons: u64) -> Telemetry {
    Telemetry {
        samples: 10,
        sm_clock_mhz: Some(sm),
        max_sm_clock_mhz: Some(max_sm),
        mem_clock_mhz: Some(5001.0),
        power_w: Some(power),
        power_limit_w: Some(limit),
        temperature_c: Some(temp),
        utilization_pct: Some(100.0),
        throttle_reasons: Some(reasons),
        ..Default::default()
    }
}

fn check<'a>(report: &'a GpuReport, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", report.checks))
}

#[test]
fn the_state_before_the_checks_is_parsed() {
    let t4 = parse_nvidia_smi_state(T4_STATE);
    assert_eq!(
        t4,
        [SmiState {
            index: 0,
            sm_clock_mhz: Some(300.0),
            max_sm_clock_mhz: Some(1590.0),
            mem_clock_mhz: Some(405.0),
            max_mem_clock_mhz: Some(5001.0),
            power_w: Some(9.12),
            power_limit_w: Some(70.0),
            temperature_c: Some(27.0),
            utilization_pct: Some(0.0),
            memory_used_mib: Some(2.0),
            mig: None,
            compute_mode: Some("Default".into()),
            throttle_reasons: Some(1),
        }]
    );
    let h100 = parse_nvidia_smi_state(H100_STATE);
    assert_eq!(h100.len(), 8);
    assert!(
        h100.iter()
            .all(|s| s.mig == Some(false) && s.power_limit_w == Some(700.0))
    );
    // Without the throttle reasons field (an old driver), and with fields a GPU does not report.
    let old = parse_nvidia_smi_state(
        "0, [N/A], [N/A], 405, 5001, [Not Supported], 70.00, 27, 0, 2, [N/A], Default\nnot a line\n",
    );
    assert_eq!(old.len(), 1);
    assert_eq!(
        (old[0].sm_clock_mhz, old[0].power_w, old[0].throttle_reasons),
        (None, None, None)
    );

    let apps = parse_nvidia_smi_processes(
        "GPU-0f3c8a21-6d4e-7b19-c2a5-8e1f9d3b6a40, 4242, python, train.py, 30720\n\
         GPU-1a9e4c72-0b5d-e863-4f17-d2c8a6b3e951, 77, /usr/bin/python3, [N/A]\n",
    );
    assert_eq!(apps.len(), 2);
    assert_eq!(
        (apps[0].pid, apps[0].name.as_str(), apps[0].used_memory_mib),
        (4242, "python, train.py", Some(30720))
    );
    assert_eq!(apps[1].used_memory_mib, None);

    assert_eq!(throttle_reason_names(0x4), ["power cap"]);
    assert_eq!(
        throttle_reason_names(0x24 | 0x1000),
        ["power cap", "software thermal slowdown", "other (0x1000)"]
    );
    assert!(throttle_reason_names(0).is_empty());
}

#[test]
fn telemetry_goes_beside_each_figure_and_a_power_capped_t4_still_passes() {
    // A T4 at its 70 W cap: clocks well below the 1,590 MHz boost is what a healthy T4 does under
    // tensor load, and the threshold allows for it (constructed figures).
    let mut capped = torch(T4_TORCH);
    capped.devices[0].matmul[0].telemetry = Some(telemetry(1095.0, 1590.0, 69.8, 70.0, 71.0, 0x4));
    capped.devices[0].bandwidth.as_mut().unwrap().telemetry =
        Some(telemetry(1590.0, 1590.0, 52.3, 70.0, 66.0, 0));
    let t4 = catalog::instance("g4dn.xlarge").unwrap();
    let smi = NvidiaSmiReport::from_outputs(T4_QUERY, T4_SUMMARY).with_state(T4_STATE, "");
    let r = GpuReport::assess(
        &Reference::instance(t4, 1),
        smi.clone(),
        capped.clone(),
        None,
        None,
    );
    assert!(r.passed(), "{:#?}", r.checks);
    let fp16 = check(&r, "matmul fp16 gpu0");
    assert_eq!(
        fp16.detail,
        "24.6 TFLOP/s = 38% of the 65 TFLOP/s dense fp16 peak (passes at 25%); n=8192; \
         SM 1095/1590 MHz, 70/70 W, 71 C, throttled: power cap"
    );
    assert!(
        check(&r, "memory bandwidth gpu0")
            .detail
            .ends_with("; 1024 MiB copy; SM 1590/1590 MHz, 52/70 W, 66 C, not throttled")
    );
    // A passing figure carries the general one-liner; the table's explanations list each kind once.
    assert!(fp16.hint.as_deref().unwrap().contains("power cap or heat"));
    let lines = r.explanations();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("matmul: a low figure usually means"));
    assert!(lines[1].starts_with("memory bandwidth: "));

    // The same T4 overheating as well: clocks at 645 MHz, fp16 at 18 % of its peak. It fails, and the
    // hint names what held it down rather than the general causes.
    let mut hot = capped;
    hot.devices[0].matmul[0].tflops = 11.7;
    hot.devices[0].matmul[0].telemetry = Some(telemetry(645.0, 1590.0, 69.9, 70.0, 86.0, 0x24));
    let r = GpuReport::assess(&Reference::instance(t4, 1), smi, hot, None, None);
    let failed: Vec<&str> = r.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["matmul fp16 gpu0"]);
    let fp16 = check(&r, "matmul fp16 gpu0");
    assert_eq!(
        fp16.hint.as_deref(),
        Some("clocks were held down by: power cap, software thermal slowdown")
    );
    assert!(
        r.explanations().contains(
            &"matmul fp16 gpu0: clocks were held down by: power cap, software thermal slowdown"
                .to_string()
        )
    );
}

#[test]
fn a_failing_h100_names_a_lowered_power_limit_mig_and_other_processes() {
    // Constructed: GPU 0 of the p5 capped at 400 W by an administrator, MIG on, another process on it.
    let state = H100_STATE.replacen(
        "0, 1980, 1980, 2619, 2619, 69.14, 700.00, 28, 0, 1, Disabled,",
        "0, 1980, 1980, 2619, 2619, 69.14, 400.00, 28, 35, 30721, Enabled,",
        1,
    );
    let apps = "GPU-0f3c8a21-6d4e-7b19-c2a5-8e1f9d3b6a40, 4242, python3, 30720\n";
    let smi = NvidiaSmiReport::from_outputs(H100_QUERY, H100_SUMMARY).with_state(&state, apps);
    let mut slow = torch(H100_TORCH);
    slow.devices[0].uuid = Some("0f3c8a21-6d4e-7b19-c2a5-8e1f9d3b6a40".into());
    slow.devices[0].matmul[0].tflops = 301.0; // 30 % of 989.4
    let p5 = catalog::instance("p5.48xlarge").unwrap();
    let r = GpuReport::assess(
        &Reference::instance(p5, 8),
        smi,
        slow,
        Some(serde_json::from_str(H100_NCCL).unwrap()),
        None,
    );
    let failed: Vec<&str> = r.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, ["matmul fp16 gpu0"]);
    let hint = check(&r, "matmul fp16 gpu0").hint.clone().unwrap();
    assert!(
        hint.contains("power limit is 400 W, below the datasheet's 700 W"),
        "{hint}"
    );
    assert!(hint.contains("MIG is on"), "{hint}");
    assert!(
        hint.contains("another process was using the GPU before the check (30721 MiB in use, 35% busy: python3 (pid 4242))"),
        "{hint}"
    );
    let smi_line = &check(&r, "nvidia-smi").detail;
    assert!(
        smi_line.ends_with("; MIG on for 1 GPU(s); 1 process(es) already using the GPUs"),
        "{smi_line}"
    );
    // The all-reduce has no datasheet figure; its explanation comes with the measured bus bandwidth.
    assert!(
        r.explanations()
            .iter()
            .any(|l| l.starts_with("nccl all-reduce: a low bus bandwidth"))
    );
}

#[test]
fn on_this_machine_the_gpu_model_comes_from_its_name() {
    let smi = NvidiaSmiReport::from_outputs(H100_QUERY, H100_SUMMARY).with_state(H100_STATE, "");
    let reference = Reference::detect(&smi, &torch(H100_TORCH), None);
    assert_eq!(
        (
            reference.instance,
            reference.gpu.map(|g| g.id),
            reference.expected_gpus
        ),
        (None, Some("h100"), 8)
    );
    let r = GpuReport::assess(
        &reference,
        smi.clone(),
        torch(H100_TORCH),
        Some(serde_json::from_str(H100_NCCL).unwrap()),
        Some(vllm_ok()),
    );
    assert!(r.passed(), "{:#?}", r.checks);
    assert_eq!(
        (r.instance.as_deref(), r.gpu_model.as_deref()),
        (None, Some("NVIDIA H100 80GB SXM"))
    );
    assert!(
        check(&r, "nvidia-smi")
            .detail
            .ends_with("; judged by the NVIDIA H100 80GB SXM datasheet")
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["instance"], serde_json::Value::Null);
    assert_eq!(json["thresholds"]["matmul_fp16"], 0.45);

    // CUDA_VISIBLE_DEVICES=0: nvidia-smi still lists eight, PyTorch sees one; one is expected.
    let mut one = torch(H100_TORCH);
    one.devices.truncate(1);
    let reference = Reference::detect(&smi, &one, None);
    assert_eq!(reference.expected_gpus, 1);
    let r = GpuReport::assess(&reference, smi, one, None, None);
    assert!(r.passed(), "{:#?}", r.checks);
    assert_eq!(
        check(&r, "nccl all-reduce").detail,
        "one GPU: nothing to all-reduce across"
    );
}

#[test]
fn a_gpu_the_catalog_lacks_is_measured_not_judged() {
    // Constructed: the A10G's figures under a GeForce name, and a box with an A10G beside it.
    let mut geforce = torch(A10G_TORCH);
    geforce.devices[0].name = "NVIDIA GeForce RTX 4090".into();
    let query = "0, NVIDIA GeForce RTX 4090, GPU-7e1d, 00000000:01:00.0, 24564, 550.127.05\n";
    let smi = NvidiaSmiReport::from_outputs(query, "");
    let reference = Reference::detect(&smi, &geforce, None);
    assert_eq!((reference.gpu, reference.thresholds()), (None, None));
    let r = GpuReport::assess(&reference, smi, geforce.clone(), None, None);
    assert!(r.passed(), "nothing failed: {:#?}", r.checks);
    assert_eq!(r.gpu_model, None);
    let fp16 = check(&r, "matmul fp16 gpu0");
    assert_eq!(fp16.status, CheckStatus::Measured);
    assert_eq!(
        fp16.detail,
        "58.7 TFLOP/s; n=16384; not judged: gpulab's catalog has no datasheet for the NVIDIA GeForce RTX 4090"
    );
    assert_eq!((fp16.expected, fp16.threshold), (None, None));
    assert!(
        check(&r, "nvidia-smi")
            .detail
            .ends_with("not in gpulab's catalog: figures are measured, not judged")
    );
    assert_eq!(CheckStatus::Measured.label(), "measured");
    assert!(!CheckStatus::Measured.is_failure());

    // Two kinds of GPU: each judged by its own datasheet, or measured where there is none.
    let mut mixed = torch(A10G_TORCH);
    let mut second = geforce.devices[0].clone();
    second.index = 1;
    mixed.devices.push(second);
    let smi = NvidiaSmiReport::from_outputs(A10G_QUERY, A10G_SUMMARY);
    let reference = Reference::detect(&smi, &mixed, None);
    assert_eq!(reference.gpu.map(|g| g.id), Some("a10g"));
    let r = GpuReport::assess(&reference, smi, mixed, None, None);
    assert_eq!(check(&r, "matmul fp16 gpu0").status, CheckStatus::Pass);
    assert_eq!(check(&r, "matmul fp16 gpu1").status, CheckStatus::Measured);
}

#[test]
fn a_lab_judges_by_whole_model_names() {
    // An L40S where the lab asked for an L4 is the wrong GPU, though "L40S" starts with "L4".
    let g6 = catalog::instance("g6.xlarge").unwrap();
    let query = "0, NVIDIA L40S, GPU-aa, 00000000:00:1E.0, 46068, 550.127.05\n";
    let r = GpuReport::assess(
        &Reference::instance(g6, 1),
        NvidiaSmiReport::from_outputs(query, ""),
        TorchReport::default(),
        None,
        None,
    );
    assert_eq!(
        check(&r, "nvidia-smi").detail,
        "GPU 0 is a NVIDIA L40S, expected NVIDIA L4"
    );
}

#[test]
fn without_a_gpu_each_check_says_so_in_one_line() {
    // The scripts' real output on a machine with no GPU, no driver, no PyTorch and no vLLM.
    let value = |out: &str| parse_script_output(out.as_bytes(), b"", 0).unwrap();
    let smi = NvidiaSmiReport::from_raw(serde_json::from_value(value(CPU_ONLY_SMI)).unwrap());
    let torch: TorchReport = serde_json::from_value(value(CPU_ONLY_TORCH)).unwrap();
    let vllm: VllmSmokeReport = serde_json::from_value(value(CPU_ONLY_VLLM)).unwrap();
    let reference = Reference::detect(&smi, &torch, None);
    assert_eq!((reference.gpu, reference.expected_gpus), (None, 0));
    let r = GpuReport::assess(&reference, smi, torch, None, Some(vllm));
    assert!(!r.passed());
    let rows: Vec<(String, String)> = r.rows().into_iter().map(|(c, s, _)| (c, s)).collect();
    let expect = |c: &str, s: &str| (c.to_string(), s.to_string());
    assert_eq!(
        rows,
        [
            expect("nvidia-smi", "UNAVAILABLE"),
            expect("pytorch cuda", "UNAVAILABLE"),
            expect("matmul fp16", "UNAVAILABLE"),
            expect("matmul bf16", "UNAVAILABLE"),
            expect("matmul fp32", "UNAVAILABLE"),
            expect("memory bandwidth", "UNAVAILABLE"),
            expect("nccl all-reduce", "skipped"),
            expect("vllm generate", "UNAVAILABLE"),
        ]
    );
    assert_eq!(
        r.rows()[0].2,
        "nvidia-smi not found on PATH: no NVIDIA driver on this machine, or its utilities are not on PATH"
    );
    assert_eq!(
        check(&r, "nccl all-reduce").detail,
        "no GPU visible: nothing to all-reduce across"
    );
    assert!(r.rows().iter().all(|(_, _, detail)| !detail.contains('\n')));
    assert!(r.explanations().is_empty());
}
