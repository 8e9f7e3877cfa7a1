//! vLLM in the workspace: `gpulab vllm serve MODEL` (the OpenAI-compatible server, started detached
//! with memory settings that suit the GPU) and `gpulab vllm bench` (throughput against that server, or
//! vLLM's own offline `vllm bench throughput`).
//!
//! The server listens on 127.0.0.1 in the pod (reach it with a port-forward, never a public port); its
//! log and pid file live in `/workspace/.gpulab/` ([`LOG_FILE`], [`PID_FILE`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::InstanceType;
use crate::checks::{run_python_json, supports_bf16};
use crate::events::Silent;
use crate::remote::shell_quote;
use crate::remote::{ExecRequest, RemoteExec};
use crate::wait::{self, Backoff, Check, Wait};
use crate::{Error, Result};

/// The server's port in the pod.
pub const DEFAULT_PORT: u16 = 8000;
/// The server's log.
pub const LOG_FILE: &str = "/workspace/.gpulab/vllm.log";
/// The server's pid.
pub const PID_FILE: &str = "/workspace/.gpulab/vllm.pid";
/// The throughput script run against the server.
pub const BENCH_SCRIPT: &str = include_str!("checks/scripts/vllm_bench.py");

/// How `vllm serve` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeConfig {
    /// Hugging Face model id or a path in the workspace.
    pub model: String,
    /// Port in the pod.
    pub port: u16,
    /// `--dtype`: "half" on GPUs without bf16 (T4, V100), else "auto" (the model's own, bf16 for most).
    pub dtype: String,
    /// `--tensor-parallel-size`: the GPUs the workspace has (it must divide the model's attention heads).
    pub tensor_parallel_size: u32,
    /// `--gpu-memory-utilization`: the share of each GPU's memory vLLM may take.
    pub gpu_memory_utilization: f64,
    /// `--max-model-len` upper bound from the GPU memory; the start script lowers it to the model's own
    /// context length when the model's config says less.
    pub max_model_len: u32,
    /// More arguments for `vllm serve`, as given.
    pub extra_args: Vec<String>,
}

impl ServeConfig {
    /// Settings for `model` on `gpus` GPUs of `instance`:
    ///
    /// - memory utilization 0.85 on 16 GiB GPUs (the CUDA context and PyTorch's allocator need a larger
    ///   share of a small GPU), 0.90 above;
    /// - max-model-len from the total GPU memory (what is left after the weights holds the KV cache):
    ///   2048 up to 16 GiB, 4096 up to 24, 8192 up to 48, 16384 up to 96, 32768 above;
    /// - dtype half on pre-Ampere GPUs, which lack bf16; tensor parallel over every GPU.
    pub fn for_gpu(model: impl Into<String>, instance: &InstanceType, gpus: u32) -> Self {
        let gpu = instance.gpu_model();
        let gpus = gpus.max(1);
        // A slice of a GPU (g6f) has its share of the memory.
        let gpu_gib = instance.gpu_memory_gib();
        let total_gib = gpu_gib * gpus;
        let max_model_len = match total_gib {
            0..=16 => 2048,
            17..=24 => 4096,
            25..=48 => 8192,
            49..=96 => 16384,
            _ => 32768,
        };
        ServeConfig {
            model: model.into(),
            port: DEFAULT_PORT,
            dtype: if supports_bf16(gpu) { "auto" } else { "half" }.into(),
            tensor_parallel_size: gpus,
            gpu_memory_utilization: if gpu_gib <= 16 { 0.85 } else { 0.90 },
            max_model_len,
            extra_args: Vec::new(),
        }
    }

    /// The `vllm serve` command line, with `max_model_len` as the length.
    pub fn argv(&self) -> Vec<String> {
        self.argv_with_len(&self.max_model_len.to_string())
    }

    fn argv_with_len(&self, max_len: &str) -> Vec<String> {
        let mut argv: Vec<String> = [
            "vllm",
            "serve",
            &self.model,
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--dtype",
            &self.dtype,
            "--tensor-parallel-size",
            &self.tensor_parallel_size.to_string(),
            "--gpu-memory-utilization",
            &format!("{:.2}", self.gpu_memory_utilization),
            "--max-model-len",
            max_len,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(self.extra_args.iter().cloned());
        argv
    }

    /// The script that starts the server detached (setsid, nohup), writes its pid and log under
    /// `/workspace/.gpulab`, and does nothing when one is already running.
    pub fn start_script(&self) -> String {
        let command = self
            .argv_with_len("\"$MAXLEN\"")
            .iter()
            .map(|w| {
                if w == "\"$MAXLEN\"" {
                    w.clone()
                } else {
                    shell_quote(w)
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let model = shell_quote(&self.model);
        format!(
            r#"set -eu
mkdir -p /workspace/.gpulab
# The pid file is on the volume and outlives the pod: after a restart the number may belong to another
# process, so it counts only if that process is vLLM's server.
if [ -s {PID_FILE} ] && kill -0 "$(cat {PID_FILE})" 2>/dev/null \
  && tr '\0' ' ' <"/proc/$(cat {PID_FILE})/cmdline" 2>/dev/null | grep -q 'vllm'; then
  echo "running $(cat {PID_FILE})"; exit 0
fi
if [ -x /workspace/.venv/bin/vllm ]; then export PATH=/workspace/.venv/bin:$PATH; fi
command -v vllm >/dev/null 2>&1 || {{ echo "gpulab: vllm is not installed in the workspace" >&2; exit 127; }}
MAXLEN={max_len}
# The model's own context length, when its config can be read: a longer --max-model-len is refused.
PY=$(command -v python || command -v python3 || echo python3)
MODEL_MAX=$("$PY" - {model} 2>/dev/null <<'PY' || true
import sys
from transformers import AutoConfig
c = AutoConfig.from_pretrained(sys.argv[1])
for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
    if isinstance(getattr(c, key, None), int):
        print(getattr(c, key)); break
PY
)
case "$MODEL_MAX" in ''|*[!0-9]*) ;; *) [ "$MODEL_MAX" -lt "$MAXLEN" ] && MAXLEN=$MODEL_MAX ;; esac
nohup setsid {command} >{LOG_FILE} 2>&1 </dev/null &
echo $! >{PID_FILE}
echo "started $!"
"#,
            max_len = self.max_model_len,
        )
    }
}

/// A server that `start` launched or found running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHandle {
    /// Its process id in the pod.
    pub pid: u32,
    /// False when one was already running and left alone.
    pub started: bool,
    /// Its log in the pod.
    pub log_file: String,
}

/// Start `vllm serve` detached in the workspace (or find the one running).
pub async fn start(exec: &dyn RemoteExec, config: &ServeConfig) -> Result<ServerHandle> {
    let mut request = ExecRequest::shell(config.start_script());
    request.timeout = Some(Duration::from_secs(120));
    let output = exec.exec(request).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Remote {
            message: format!(
                "starting vLLM: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            hint: (output.status.shell_code() == 127)
                .then(|| "the workspace setup installs vLLM; check `gpulab status`".into()),
        });
    }
    let (started, pid) = stdout
        .lines()
        .find_map(|l| {
            let (word, pid) = l.split_once(' ')?;
            Some((word == "started", pid.trim().parse().ok()?))
        })
        .ok_or_else(|| Error::Remote {
            message: format!("starting vLLM: unexpected output {stdout:?}"),
            hint: None,
        })?;
    Ok(ServerHandle {
        pid,
        started,
        log_file: LOG_FILE.into(),
    })
}

/// True when the server answers `GET /v1/models` on `port` in the pod.
pub async fn is_ready(exec: &dyn RemoteExec, port: u16) -> Result<bool> {
    let mut request = ExecRequest::shell(format!(
        "curl -sf -m 5 -o /dev/null http://127.0.0.1:{port}/v1/models"
    ));
    request.timeout = Some(Duration::from_secs(20));
    let output = exec.exec(request).await?;
    match output.status.shell_code() {
        0 => Ok(true),
        127 => Err(Error::Remote {
            message: "curl is not installed in the workspace".into(),
            hint: None,
        }),
        _ => Ok(false),
    }
}

/// True while the process in the pid file lives.
pub async fn is_running(exec: &dyn RemoteExec) -> Result<bool> {
    let output = exec
        .exec(ExecRequest::shell(format!(
            "[ -s {PID_FILE} ] && kill -0 \"$(cat {PID_FILE})\" 2>/dev/null && tr '\\0' ' ' <\"/proc/$(cat {PID_FILE})/cmdline\" | grep -q vllm"
        )))
        .await?;
    Ok(output.status.success())
}

/// The last `lines` lines of the server's log.
pub async fn log_tail(exec: &dyn RemoteExec, lines: u32) -> Result<String> {
    let output = exec
        .exec(ExecRequest::shell(format!(
            "tail -n {lines} {LOG_FILE} 2>/dev/null"
        )))
        .await?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Wait until the server answers on `port`; fails early, with its log, when the process dies (a model
/// too big for the GPU, an unknown model).
pub async fn wait_ready(exec: &dyn RemoteExec, port: u16, timeout: Duration) -> Result<()> {
    let what = format!("vLLM to answer on port {port}");
    let wait = Wait {
        step: "wait for vLLM",
        what: &what,
        timeout,
        backoff: Backoff::fixed(Duration::from_secs(3)),
    };
    wait::until(&Silent, wait, || async {
        if is_ready(exec, port).await? {
            return Ok(Check::Done(()));
        }
        if !is_running(exec).await? {
            return Err(Error::Remote {
                message: format!(
                    "vLLM exited before it was ready; its log ends:\n{}",
                    log_tail(exec, 30).await?
                ),
                hint: Some(
                    "a smaller model, --max-model-len or --gpu-memory-utilization may fit".into(),
                ),
            });
        }
        Ok(Check::Pending(format!("GET /v1/models; log in {LOG_FILE}")))
    })
    .await
}

/// Stop the server (TERM, then KILL after 20 s). False when none was running.
pub async fn stop(exec: &dyn RemoteExec) -> Result<bool> {
    let script = format!(
        r#"[ -s {PID_FILE} ] || {{ echo none; exit 0; }}
pid=$(cat {PID_FILE})
# A pid from before a restart may now be another process: never signal one that is not vLLM's.
if ! kill -0 "$pid" 2>/dev/null || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q vllm; then
  rm -f {PID_FILE}; echo none; exit 0
fi
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$pid" 2>/dev/null && {{ kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; }}
rm -f {PID_FILE}
echo stopped"#
    );
    let output = exec.exec(ExecRequest::shell(script)).await?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "stopped")
}

/// What `bench` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// The server's base URL as seen from the pod.
    pub url: String,
    /// The model; `None` asks the server for its first.
    pub model: Option<String>,
    /// Requests in all.
    pub requests: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Output tokens per request (end-of-sequence ignored, so each gives this many).
    pub max_tokens: u32,
    /// The prompt; `None` uses the script's.
    pub prompt: Option<String>,
    /// Time limit for the whole run.
    pub timeout: Duration,
}

impl BenchOptions {
    /// The defaults, against a server on `port` in the workspace.
    pub fn on_port(port: u16) -> Self {
        BenchOptions {
            url: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        }
    }

    /// Refuse counts that cannot make a benchmark, naming the option.
    pub fn check(&self) -> Result<()> {
        for (name, value) in [
            ("requests", self.requests),
            ("concurrency", self.concurrency),
            ("max_tokens", self.max_tokens),
        ] {
            if value == 0 {
                return Err(crate::Error::Usage {
                    message: format!("{name} is 0: a benchmark needs at least 1"),
                    hint: format!("give {name} of 1 or more"),
                });
            }
        }
        Ok(())
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            url: format!("http://127.0.0.1:{DEFAULT_PORT}"),
            model: None,
            requests: 64,
            concurrency: 16,
            max_tokens: 128,
            prompt: None,
            timeout: Duration::from_secs(900),
        }
    }
}

/// The throughput measured against the server.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BenchReport {
    /// The server's URL.
    pub url: String,
    /// The model served.
    pub model: Option<String>,
    /// Requests sent.
    pub requests: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Requests that completed.
    #[serde(default)]
    pub completed: u32,
    /// Requests that failed.
    #[serde(default)]
    pub failed: u32,
    /// Distinct errors, the first few.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Output tokens generated.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens processed.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Wall time, s.
    #[serde(default)]
    pub elapsed_s: f64,
    /// Output tokens per second over the run.
    #[serde(default)]
    pub output_tokens_per_s: f64,
    /// Completed requests per second.
    #[serde(default)]
    pub requests_per_s: f64,
    /// Median request latency, s.
    pub latency_p50_s: Option<f64>,
    /// 90th percentile request latency, s.
    pub latency_p90_s: Option<f64>,
    /// Why the run did not happen (the server did not answer).
    pub error: Option<String>,
}

/// Measure throughput against the running server: `requests` completions, `concurrency` at a time.
pub async fn bench(exec: &dyn RemoteExec, options: &BenchOptions) -> Result<BenchReport> {
    let mut env = vec![
        ("GPULAB_BENCH_URL".to_string(), options.url.clone()),
        ("GPULAB_BENCH_REQUESTS".into(), options.requests.to_string()),
        (
            "GPULAB_BENCH_CONCURRENCY".into(),
            options.concurrency.to_string(),
        ),
        (
            "GPULAB_BENCH_MAX_TOKENS".into(),
            options.max_tokens.to_string(),
        ),
    ];
    if let Some(model) = &options.model {
        env.push(("GPULAB_BENCH_MODEL".into(), model.clone()));
    }
    if let Some(prompt) = &options.prompt {
        env.push(("GPULAB_BENCH_PROMPT".into(), prompt.clone()));
    }
    let value = run_python_json(exec, BENCH_SCRIPT, None, env, options.timeout)
        .await?
        .map_err(|why| Error::Remote {
            message: format!("vLLM benchmark: {why}"),
            hint: None,
        })?;
    serde_json::from_value(value).map_err(|e| Error::Remote {
        message: format!("vLLM benchmark: unexpected output: {e}"),
        hint: None,
    })
}

/// What vLLM's offline `vllm bench throughput` reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OfflineThroughput {
    /// Requests per second.
    pub requests_per_s: f64,
    /// Prompt plus output tokens per second.
    pub total_tokens_per_s: f64,
    /// Output tokens per second, where the version prints it.
    pub output_tokens_per_s: Option<f64>,
}

/// The `vllm bench throughput` command line (vLLM's own offline benchmark, random prompts), for a
/// model not being served. It needs the GPU to itself: stop the server first.
pub fn offline_bench_argv(
    config: &ServeConfig,
    prompts: u32,
    input_len: u32,
    output_len: u32,
) -> Vec<String> {
    [
        "vllm",
        "bench",
        "throughput",
        "--model",
        &config.model,
        "--dtype",
        &config.dtype,
        "--tensor-parallel-size",
        &config.tensor_parallel_size.to_string(),
        "--gpu-memory-utilization",
        &format!("{:.2}", config.gpu_memory_utilization),
        "--input-len",
        &input_len.to_string(),
        "--output-len",
        &output_len.to_string(),
        "--num-prompts",
        &prompts.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Parse vLLM's `Throughput: 10.52 requests/s, 2693.81 total tokens/s, 1346.90 output tokens/s` line.
pub fn parse_offline_throughput(output: &str) -> Option<OfflineThroughput> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("Throughput:"))?;
    let figure = |unit: &str| -> Option<f64> {
        line.split(',').find_map(|part| {
            let part = part.trim().trim_start_matches("Throughput:").trim();
            part.strip_suffix(unit)?.trim().parse().ok()
        })
    };
    Some(OfflineThroughput {
        requests_per_s: figure("requests/s")?,
        total_tokens_per_s: figure("total tokens/s")?,
        output_tokens_per_s: figure("output tokens/s"),
    })
}

/// Run `vllm bench throughput` in the workspace and parse its result.
pub async fn bench_offline(
    exec: &dyn RemoteExec,
    config: &ServeConfig,
    prompts: u32,
    timeout: Duration,
) -> Result<OfflineThroughput> {
    let line = offline_bench_argv(config, prompts, 128, 128)
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        "if [ -x /workspace/.venv/bin/vllm ]; then export PATH=/workspace/.venv/bin:$PATH; fi; {line}"
    );
    let mut request = ExecRequest::shell(script);
    request.timeout = Some(timeout);
    let output = exec.exec(request).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_offline_throughput(&stdout).ok_or_else(|| Error::Remote {
        message: format!(
            "vllm bench throughput (exit {}) printed no throughput: {}",
            output.status.shell_code(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        hint: Some("`vllm bench` needs vLLM 0.9 or newer".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::instance;

    #[test]
    fn serve_settings_per_gpu() {
        let t4 = ServeConfig::for_gpu("facebook/opt-125m", instance("g4dn.xlarge").unwrap(), 1);
        assert_eq!(
            t4.argv(),
            [
                "vllm",
                "serve",
                "facebook/opt-125m",
                "--host",
                "127.0.0.1",
                "--port",
                "8000",
                "--dtype",
                "half",
                "--tensor-parallel-size",
                "1",
                "--gpu-memory-utilization",
                "0.85",
                "--max-model-len",
                "2048"
            ]
        );
        let v100 = ServeConfig::for_gpu("m", instance("p3.2xlarge").unwrap(), 1);
        assert_eq!((v100.dtype.as_str(), v100.max_model_len), ("half", 2048));

        let a10g = ServeConfig::for_gpu(
            "Qwen/Qwen2.5-7B-Instruct",
            instance("g5.xlarge").unwrap(),
            1,
        );
        assert_eq!(
            (
                a10g.dtype.as_str(),
                a10g.gpu_memory_utilization,
                a10g.max_model_len,
                a10g.tensor_parallel_size
            ),
            ("auto", 0.90, 4096, 1)
        );
        let four = ServeConfig::for_gpu("m", instance("g5.12xlarge").unwrap(), 4);
        assert_eq!((four.tensor_parallel_size, four.max_model_len), (4, 16384));
        let quad_t4 = ServeConfig::for_gpu("m", instance("g4dn.12xlarge").unwrap(), 4);
        assert_eq!(
            (
                quad_t4.dtype.as_str(),
                quad_t4.tensor_parallel_size,
                quad_t4.max_model_len
            ),
            ("half", 4, 16384)
        );
        let h100 = ServeConfig::for_gpu("m", instance("p5.48xlarge").unwrap(), 8);
        assert_eq!(
            (
                h100.dtype.as_str(),
                h100.tensor_parallel_size,
                h100.max_model_len
            ),
            ("auto", 8, 32768)
        );
        assert!(
            h100.argv()
                .ends_with(&["--max-model-len".to_string(), "32768".into()])
        );
    }

    #[test]
    fn the_start_script_detaches_and_records_its_pid() {
        let mut config =
            ServeConfig::for_gpu("org/model with space", instance("g4dn.xlarge").unwrap(), 1);
        config.extra_args = vec!["--enforce-eager".into()];
        let script = config.start_script();
        assert!(script.contains(
            "nohup setsid vllm serve 'org/model with space' --host 127.0.0.1 --port 8000 --dtype half \
             --tensor-parallel-size 1 --gpu-memory-utilization 0.85 --max-model-len \"$MAXLEN\" \
             --enforce-eager >/workspace/.gpulab/vllm.log 2>&1 </dev/null &"
        ), "{script}");
        assert!(script.contains("MAXLEN=2048\n"));
        assert!(script.contains("echo $! >/workspace/.gpulab/vllm.pid"));
        assert_bash_syntax(&script);
    }

    /// `bash -n`: the script parses (where bash is installed).
    fn assert_bash_syntax(script: &str) {
        use std::io::Write;
        let Ok(mut child) = std::process::Command::new("bash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn offline_throughput() {
        let out = "INFO 11-29 ... Loading model\nThroughput: 10.52 requests/s, 2693.81 total tokens/s, 1346.90 output tokens/s\nTotal num prompt tokens:  12800\n";
        assert_eq!(
            parse_offline_throughput(out),
            Some(OfflineThroughput {
                requests_per_s: 10.52,
                total_tokens_per_s: 2693.81,
                output_tokens_per_s: Some(1346.90)
            })
        );
        let old = parse_offline_throughput("Throughput: 3.10 requests/s, 1587.20 tokens/s");
        assert_eq!(old, None, "old releases printed no total/output split");
        let argv = offline_bench_argv(
            &ServeConfig::for_gpu("m", instance("g5.xlarge").unwrap(), 1),
            200,
            128,
            128,
        );
        assert_eq!(argv[..3], ["vllm", "bench", "throughput"]);
        assert!(argv.ends_with(&["--num-prompts".to_string(), "200".into()]));
    }
}
