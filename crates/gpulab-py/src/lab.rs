//! `gpulab.Lab`: one lab's lifecycle from Python, over `gpulab_core::Lab`. Each method converts its
//! arguments, runs the core call on the shared runtime through [`crate::runtime::wait`] (GIL released,
//! interruptible), and converts the result.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpulab_core::checks::{CheckOptions, DEFAULT_VLLM_MODEL, GpuReport as CoreGpuReport};
use gpulab_core::events::Silent;
use gpulab_core::remote::forward::ForwardHandle;
use gpulab_core::remote::{ExecRequest, ExitStatus};
use gpulab_core::{Error, LabOptions, Provider};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::convert::to_py_err;
use crate::convert::{resolve, to_python};
use crate::runtime::wait;

/// The Jupyter server's port in the workspace.
const JUPYTER_PORT: u16 = 8888;

/// One lab: bring it up, run commands and copy files in its workspace, forward its ports, test its GPUs,
/// and take it down.
#[pyclass(module = "gpulab._gpulab", name = "Lab", frozen)]
pub(crate) struct PyLab {
    lab: Arc<gpulab_core::Lab>,
    /// The forward behind `jupyter_url`, kept open until `close`.
    jupyter: Mutex<Option<ForwardHandle>>,
}

/// The progress callback for a `progress=` argument (`gpulab._progress.callback_for`): the callable
/// given; none for `False`; a notebook display in Jupyter for `None` and `True`, and for `True` lines on
/// stdout elsewhere. Anything else is a `TypeError`.
fn progress_callback<'py>(
    py: Python<'py>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let progress = progress.unwrap_or_else(|| py.None().into_bound(py));
    let callback = py
        .import("gpulab._progress")?
        .call_method1("callback_for", (progress,))?;
    Ok((!callback.is_none()).then_some(callback))
}

/// Tell a progress callback that its call is over (`finish(ok)`, when it has that method), so a display
/// marks what was in flight done or failed; the call's own error wins over the callback's.
fn finish_progress<T>(progress: Option<&Bound<'_, PyAny>>, result: PyResult<T>) -> PyResult<T> {
    let finished = match progress {
        Some(callback) if callback.hasattr("finish").unwrap_or(false) => {
            callback.call_method1("finish", (result.is_ok(),)).map(drop)
        }
        _ => Ok(()),
    };
    let value = result?;
    finished.map(|()| value)
}

fn seconds(value: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!(
                    "{what} must be a non-negative number of seconds, not {s}"
                ))
            })
        })
        .transpose()
}

/// `asyncio.to_thread(getattr(obj, method), *args, **kwargs)`: a coroutine that runs the blocking
/// method in a worker thread, for `await lab.up_async()` inside a running event loop.
fn to_thread<'py>(
    obj: &Bound<'py, PyAny>,
    method: &str,
    args: Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let mut all = vec![obj.getattr(method)?];
    all.extend(args.iter());
    py.import("asyncio")?
        .getattr("to_thread")?
        .call(PyTuple::new(py, all)?, kwargs)
}

impl PyLab {
    fn wrap(lab: gpulab_core::Lab) -> Self {
        PyLab {
            lab: Arc::new(lab),
            jupyter: Mutex::new(None),
        }
    }

    /// Run `work` with the lab (which makes its workspace transport once and reuses it).
    fn with_lab<T, Fut>(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
        work: impl FnOnce(Arc<gpulab_core::Lab>, Arc<dyn gpulab_core::events::Reporter>) -> Fut
        + Send
        + 'static,
    ) -> PyResult<T>
    where
        T: Send + 'static,
        Fut: Future<Output = gpulab_core::Result<T>> + Send + 'static,
    {
        let lab = self.lab.clone();
        wait(py, progress, move |reporter| work(lab, reporter))
    }

    fn forward_port(
        &self,
        py: Python<'_>,
        port: u16,
        local_port: Option<u16>,
    ) -> PyResult<ForwardHandle> {
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, local_port.unwrap_or(0)));
        self.with_lab(py, None, move |lab, _| async move {
            lab.forward(listen, port, Arc::new(Silent)).await
        })
    }
}

#[pymethods]
impl PyLab {
    /// A lab from settings: defaults, gpulab.toml (or `config`), the environment, then these keyword
    /// arguments (the same as `gpulab.plan`'s). With `context` or `kubeconfig` it uses that existing
    /// cluster; otherwise `up` creates one on AWS.
    #[new]
    #[pyo3(signature = (config=None, context=None, kubeconfig=None, **kwargs))]
    fn new(
        py: Python<'_>,
        config: Option<PathBuf>,
        context: Option<String>,
        kubeconfig: Option<PathBuf>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let spec = resolve(py, config, kwargs)?;
        let provider = Provider::from_options(context, kubeconfig);
        let lab = wait(py, None, move |_| {
            gpulab_core::Lab::new(spec, provider, LabOptions::default())
        })?;
        Ok(Self::wrap(lab))
    }

    /// The lab called `name`, as `up` recorded it on this machine; `StateError` when there is none.
    #[staticmethod]
    fn load(py: Python<'_>, name: String) -> PyResult<Self> {
        let lab = wait(py, None, move |_| async move {
            gpulab_core::Lab::load(&name, LabOptions::default()).await
        })?;
        Ok(Self::wrap(lab))
    }

    /// The lab's name.
    #[getter]
    fn name(&self) -> String {
        self.lab.spec().spec.name.clone()
    }

    /// The lab's settings, as `gpulab config show` prints them.
    #[getter]
    fn spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.lab.spec().spec)
    }

    fn __repr__(&self) -> String {
        let spec = self.lab.spec();
        format!(
            "Lab(name={:?}, node_type={:?}, region={:?})",
            spec.name(),
            spec.instance.name,
            spec.spec.region
        )
    }

    /// What `up` creates and what it costs, as a dict (no API calls).
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &gpulab_core::plan::Plan::new(self.lab.spec()))
    }

    /// Bring the lab up, or finish bringing it up; returns the report as a dict. `progress` is called
    /// with each event as a dict (`False`: no progress; `True`: a display in Jupyter, lines elsewhere;
    /// default: a display in Jupyter, nothing elsewhere).
    #[pyo3(signature = (progress=None))]
    fn up<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let progress = progress_callback(py, progress)?;
        let lab = self.lab.clone();
        let report = wait(py, progress.as_ref(), move |reporter| async move {
            lab.up(reporter.as_ref()).await
        });
        to_python(py, &finish_progress(progress.as_ref(), report)?)
    }

    /// The lab as the provider and the cluster see it, and its bill, as a dict.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let lab = self.lab.clone();
        let status = wait(py, None, move |_| async move { lab.status().await })?;
        to_python(py, &status)
    }

    /// Scale the GPU nodes to zero (on an existing cluster, the workspace): the GPU bill stops,
    /// `/workspace` stays. `progress` as for `up`.
    #[pyo3(signature = (progress=None))]
    fn stop(&self, py: Python<'_>, progress: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let progress = progress_callback(py, progress)?;
        let lab = self.lab.clone();
        let done = wait(py, progress.as_ref(), move |reporter| async move {
            lab.scale(0, reporter.as_ref()).await
        });
        finish_progress(progress.as_ref(), done)
    }

    /// Scale the GPU nodes back up after `stop` (or an autostop), and wait until the workspace is
    /// ready again, with the same `/workspace`. `progress` as for `up`.
    #[pyo3(signature = (progress=None))]
    fn start(&self, py: Python<'_>, progress: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let progress = progress_callback(py, progress)?;
        let lab = self.lab.clone();
        let done = wait(py, progress.as_ref(), move |reporter| async move {
            let desired = lab.spec().spec.nodes.desired.max(1);
            lab.scale(desired, reporter.as_ref()).await
        });
        finish_progress(progress.as_ref(), done)
    }

    /// Change what stops the lab by itself, from inside the cluster: `idle` is a duration such as
    /// "30m" or "2h", or "off"; `budget` is US dollars (25) or "off". `None` keeps a setting. Returns
    /// the autostop status (settings, what the agent last saw, what comes next) as a dict. The lab's
    /// record keeps the change: `status`, `cost` and a later `up` (unless given `autostop=` or
    /// `budget=` again) see it.
    #[pyo3(signature = (idle=None, budget=None))]
    fn autostop<'py>(
        &self,
        py: Python<'py>,
        idle: Option<String>,
        budget: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let budget = match budget {
            None => None,
            Some(value) => Some(match value.extract::<f64>() {
                Ok(dollars) => dollars.to_string(),
                Err(_) => value.extract::<String>()?,
            }),
        };
        let lab = self.lab.clone();
        let status = wait(py, None, move |_| async move {
            lab.set_autostop(idle.as_deref(), budget.as_deref()).await
        })?;
        to_python(py, &status)
    }

    /// What the lab costs per hour now and has cost since `up`, as a dict.
    fn cost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cost = self
            .lab
            .cost()
            .map_err(|e| crate::convert::to_py_err(py, e))?;
        to_python(py, &cost)
    }

    /// Remove everything the lab made; returns what was deleted and what is left, as a dict.
    #[pyo3(signature = (progress=None))]
    fn down<'py>(
        &self,
        py: Python<'py>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py)?;
        let progress = progress_callback(py, progress)?;
        let lab = self.lab.clone();
        let report = wait(py, progress.as_ref(), move |reporter| async move {
            lab.down(reporter.as_ref()).await
        });
        to_python(py, &finish_progress(progress.as_ref(), report)?)
    }

    /// Run a command in the workspace: a string runs with `bash -lc`, a list runs as it is. `stdin` (str
    /// or bytes) is its input, `timeout` (seconds) kills it; `env` adds environment variables.
    #[pyo3(signature = (cmd, stdin=None, timeout=None, env=None))]
    fn exec(
        &self,
        py: Python<'_>,
        cmd: &Bound<'_, PyAny>,
        stdin: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        env: Option<std::collections::BTreeMap<String, String>>,
    ) -> PyResult<ExecResult> {
        let mut request = if let Ok(script) = cmd.cast::<PyString>() {
            ExecRequest::shell(script.to_cow()?)
        } else {
            let argv: Vec<String> = cmd.extract().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err("cmd must be a str or a list of str")
            })?;
            if argv.is_empty() {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "cmd must name a program",
                ));
            }
            ExecRequest {
                argv,
                ..Default::default()
            }
        };
        request.stdin = match stdin {
            None => None,
            Some(s) if s.is_instance_of::<PyBytes>() => Some(s.extract::<Vec<u8>>()?),
            Some(s) => Some(
                s.extract::<String>()
                    .map_err(|_| {
                        pyo3::exceptions::PyTypeError::new_err("stdin must be str or bytes")
                    })?
                    .into_bytes(),
            ),
        };
        request.timeout = seconds(timeout, "timeout")?;
        request.env = env.unwrap_or_default().into_iter().collect();
        let output = self.with_lab(
            py,
            None,
            move |lab, _| async move { lab.exec(request).await },
        )?;
        let (exit_code, signal) = match output.status {
            ExitStatus::Code(code) => (code, None),
            signal @ ExitStatus::Signal(name) => (signal.shell_code(), Some(name.to_string())),
        };
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            exit_code,
            signal,
        })
    }

    /// Copy local files or directories (a path, a quoted glob, or a list of them) into the workspace path
    /// `remote`; returns `{files, bytes, elapsed, via}`. `via="auto"`: one source as one tar stream through
    /// the API server's exec, more over SSH; `"ssh"` or `"kube"` force one (as `gpulab cp --via`).
    #[pyo3(signature = (local, remote, progress=None, via="auto", links="follow"))]
    fn copy_to<'py>(
        &self,
        py: Python<'py>,
        local: Bound<'py, PyAny>,
        remote: String,
        progress: Option<Bound<'py, PyAny>>,
        via: &str,
        links: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sources = path_list(&local)?;
        self.copy(py, sources, format!(":{remote}"), progress, via, links)
    }

    /// Copy files or directories from the workspace (a path, a glob, or a list of them) to the local path
    /// `local`; returns `{files, bytes, elapsed, via}`, with `via` as for `copy_to`.
    #[pyo3(signature = (remote, local, progress=None, via="auto", links="follow"))]
    fn copy_from<'py>(
        &self,
        py: Python<'py>,
        remote: Bound<'py, PyAny>,
        local: PathBuf,
        progress: Option<Bound<'py, PyAny>>,
        via: &str,
        links: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sources = path_list(&remote)?
            .into_iter()
            .map(|r| format!(":{r}"))
            .collect();
        let target = local.display().to_string();
        self.copy(py, sources, target, progress, via, links)
    }

    /// Make `target` mirror the directory `source`, sending only what changed; one of the two is a
    /// workspace path written `:PATH` (`lab.sync("./project", ":/workspace/project")`). Returns
    /// `{sent, deleted, updated, listed, bytes, dry_run, elapsed}`.
    #[pyo3(signature = (source, target, delete=false, dry_run=false, checksum=false, exclude=Vec::new(), gitignore=true, links="follow", progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn sync<'py>(
        &self,
        py: Python<'py>,
        source: String,
        target: String,
        delete: bool,
        dry_run: bool,
        checksum: bool,
        exclude: Vec<String>,
        gitignore: bool,
        links: &str,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use gpulab_core::remote::sync::{SyncDirection, SyncOptions};
        let direction = SyncDirection::parse(&source, &target).map_err(|e| to_py_err(py, e))?;
        let options = SyncOptions {
            checksum,
            delete,
            dry_run,
            exclude,
            no_gitignore: !gitignore,
            links: links.parse().map_err(|e| to_py_err(py, e))?,
        };
        let progress = progress_callback(py, progress)?;
        let lab = self.lab.clone();
        let report = wait(py, progress.as_ref(), move |reporter| async move {
            lab.sync(&direction, &options, reporter.as_ref()).await
        });
        to_python(py, &finish_progress(progress.as_ref(), report)?)
    }

    /// Forward `local_port` on 127.0.0.1 (default: a free one) to `port` in the workspace, until the
    /// returned `Forward` is closed: use it as a context manager.
    #[pyo3(signature = (port, local_port=None))]
    fn forward(&self, py: Python<'_>, port: u16, local_port: Option<u16>) -> PyResult<Forward> {
        let handle = self.forward_port(py, port, local_port)?;
        Ok(Forward {
            local_port: handle.local_addr().port(),
            remote_port: port,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// The URL of the workspace's Jupyter, with its token, through a forward from `local_port` (default:
    /// a free one) to port 8888 that stays open until `close()` or `down()`.
    #[pyo3(signature = (local_port=None))]
    fn jupyter_url(&self, py: Python<'_>, local_port: Option<u16>) -> PyResult<String> {
        if !self.lab.spec().spec.workspace.jupyter {
            return Err(crate::convert::to_py_err(
                py,
                Error::Remote {
                    message: format!("lab {} runs no Jupyter", self.name()),
                    hint: Some("create it with jupyter=True".into()),
                },
            ));
        }
        let lab = self.lab.clone();
        let token = wait(py, None, move |_| async move { lab.jupyter_token().await })?;
        // The lock is never held across a wait (which releases the GIL): another thread blocked on it
        // while holding the GIL would deadlock with this one.
        let open_port = self
            .jupyter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.local_addr().port())
            .filter(|open| local_port.is_none_or(|p| p == *open));
        let port = match open_port {
            Some(port) => port,
            None => {
                let old = self
                    .jupyter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                close_forward(py, old)?;
                let handle = self.forward_port(py, JUPYTER_PORT, local_port)?;
                let port = handle.local_addr().port();
                let replaced = self
                    .jupyter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(handle);
                close_forward(py, replaced)?;
                port
            }
        };
        Ok(format!("http://127.0.0.1:{port}/lab?token={token}"))
    }

    /// Stop the forward `jupyter_url` opened, if any.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let handle = self
            .jupyter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        close_forward(py, handle)
    }

    /// Run the GPU validation suite in the workspace (nvidia-smi, PyTorch matmul and bandwidth, NCCL with
    /// two or more GPUs, a vLLM smoke test with `vllm_model`, or none) and judge it against the node
    /// type's datasheet.
    ///
    /// `python` is the interpreter in the workspace (a path or a name on its PATH); by default the
    /// workspace's venv, else `python3`.
    // The text signature spells out DEFAULT_VLLM_MODEL, for introspection and the stubs.
    #[pyo3(
        signature = (vllm_model=Some(DEFAULT_VLLM_MODEL.to_string()), nccl=true, repeats=10, expected_gpus=None, python=None),
        text_signature = "(self, /, vllm_model='facebook/opt-125m', nccl=True, repeats=10, expected_gpus=None, python=None)"
    )]
    fn test_gpu(
        &self,
        py: Python<'_>,
        vllm_model: Option<String>,
        nccl: bool,
        repeats: u32,
        expected_gpus: Option<u32>,
        python: Option<String>,
    ) -> PyResult<GpuReport> {
        let options = CheckOptions {
            expected_gpus,
            repeats,
            nccl,
            vllm_model,
            python,
            ..Default::default()
        };
        let report = self.with_lab(py, None, move |lab, _| async move {
            lab.test_gpu(&options).await
        })?;
        Ok(GpuReport { report })
    }

    /// Set up Slurm in the workspace from its detected GPUs (installing slurm-wlm and munge when
    /// `install_missing`), start it and verify it with a one-GPU job; returns what it did as a dict.
    #[pyo3(signature = (install_missing=true))]
    fn slurm_setup<'py>(
        &self,
        py: Python<'py>,
        install_missing: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = gpulab_core::slurm::SetupOptions {
            install_missing,
            ..Default::default()
        };
        let setup = self.with_lab(py, None, move |lab, _| async move {
            lab.slurm_setup(&options).await
        })?;
        to_python(py, &setup)
    }

    /// Start `vllm serve model` in the workspace on `port` (or find the one running), sized for the
    /// lab's GPUs, and, with `wait`, wait up to `timeout` seconds until it answers. Returns the server
    /// (`pid`, `started`, `log_file`) and its settings (`config`) as a dict; reach it with
    /// `lab.forward(port)`.
    #[pyo3(signature = (model, port=8000, wait=true, timeout=900.0))]
    fn vllm_serve<'py>(
        &self,
        py: Python<'py>,
        model: String,
        port: u16,
        wait: bool,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut config = self.lab.vllm_config(model);
        config.port = port;
        let timeout = seconds(Some(timeout), "timeout")?.unwrap_or_default();
        let served = self.with_lab(py, None, move |lab, _| async move {
            let server = lab.vllm_serve(&config, wait.then_some(timeout)).await?;
            Ok(serde_json::json!({
                "pid": server.pid,
                "started": server.started,
                "log_file": server.log_file,
                "config": config,
            }))
        })?;
        to_python(py, &served)
    }

    /// Stop the vLLM server `vllm_serve` started; False when none was running.
    fn vllm_stop(&self, py: Python<'_>) -> PyResult<bool> {
        self.with_lab(py, None, move |lab, _| async move { lab.vllm_stop().await })
    }

    /// Measure the running vLLM server's throughput from inside the pod: `requests` completions of
    /// `max_tokens` tokens, `concurrency` at a time. Returns output tokens/s, requests/s, p50/p90 latency
    /// and any errors as a dict (`error` says why when the server did not answer).
    #[pyo3(signature = (port=8000, requests=64, concurrency=16, max_tokens=128, prompt=None))]
    fn vllm_bench<'py>(
        &self,
        py: Python<'py>,
        port: u16,
        requests: u32,
        concurrency: u32,
        max_tokens: u32,
        prompt: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = gpulab_core::vllm::BenchOptions {
            requests,
            concurrency,
            max_tokens,
            prompt,
            ..gpulab_core::vllm::BenchOptions::on_port(port)
        };
        let report = self.with_lab(py, None, move |lab, _| async move {
            lab.vllm_bench(&options).await
        })?;
        to_python(py, &report)
    }

    /// `await lab.up_async(...)`: `up` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn up_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "up", args, kwargs)
    }

    /// `await lab.down_async(...)`: `down` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn down_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "down", args, kwargs)
    }

    /// `await lab.status_async()`: `status` in a worker thread.
    fn status_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "status", PyTuple::empty(slf.py()), None)
    }

    /// `await lab.exec_async(...)`: `exec` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn exec_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "exec", args, kwargs)
    }

    /// `await lab.copy_to_async(...)`: `copy_to` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn copy_to_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "copy_to", args, kwargs)
    }

    /// `await lab.copy_from_async(...)`: `copy_from` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn copy_from_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "copy_from", args, kwargs)
    }

    /// `await lab.test_gpu_async(...)`: `test_gpu` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn test_gpu_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "test_gpu", args, kwargs)
    }

    /// `await lab.vllm_serve_async(...)`: `vllm_serve` in a worker thread.
    #[pyo3(signature = (*args, **kwargs))]
    fn vllm_serve_async<'py>(
        slf: &Bound<'py, Self>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        to_thread(slf.as_any(), "vllm_serve", args, kwargs)
    }
}

impl PyLab {
    fn copy<'py>(
        &self,
        py: Python<'py>,
        sources: Vec<String>,
        target: String,
        progress: Option<Bound<'py, PyAny>>,
        via: &str,
        links: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        use gpulab_core::remote::CopyOptions;
        use gpulab_core::remote::copy::Via;
        let via: Via = via.parse().map_err(|e| to_py_err(py, e))?;
        let options = CopyOptions {
            links: links.parse().map_err(|e| to_py_err(py, e))?,
            ..Default::default()
        };
        let progress = progress_callback(py, progress)?;
        let report = self.with_lab(py, progress.as_ref(), move |lab, reporter| async move {
            lab.copy(&sources, &target, via, &options, reporter.as_ref())
                .await
                .map_err(|failed| failed.error)
        });
        let report = finish_progress(progress.as_ref(), report)?;
        // The stats, and which transport carried them ("ssh" or "kube").
        #[derive(serde::Serialize)]
        struct Copied<'a> {
            #[serde(flatten)]
            stats: &'a gpulab_core::remote::TransferStats,
            via: Option<Via>,
        }
        to_python(
            py,
            &Copied {
                stats: &report.stats,
                via: report.via,
            },
        )
    }
}

/// A path, or a list of paths, as strings.
fn path_list(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let one = |v: &Bound<'_, PyAny>| -> PyResult<String> {
        Ok(v.extract::<PathBuf>()?.display().to_string())
    };
    if value.is_instance_of::<PyString>() {
        return Ok(vec![value.extract::<String>()?]);
    }
    if let Ok(list) = value.cast::<pyo3::types::PyList>() {
        return list.iter().map(|v| one(&v)).collect();
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return tuple.iter().map(|v| one(&v)).collect();
    }
    Ok(vec![one(value)?])
}

/// Close a forward and wait until its listener is gone (dropping it only aborts its task).
fn close_forward(py: Python<'_>, handle: Option<ForwardHandle>) -> PyResult<()> {
    match handle {
        Some(handle) => wait(py, None, move |_| async move {
            handle.close().await;
            Ok(())
        }),
        None => Ok(()),
    }
}

/// Every lab on this machine, as `gpulab ls` lists them: name, ID, region, node type, steps done, cost.
/// A lab whose state cannot be read is left out with a warning that says why.
#[pyfunction]
pub(crate) fn labs<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let gpulab_core::lab::LabListing { labs, unreadable } =
        gpulab_core::Lab::list(&LabOptions::default())
            .map_err(|e| crate::convert::to_py_err(py, e))?;
    let warnings = py.import("warnings")?;
    for (name, error) in unreadable {
        warnings.call_method1("warn", (format!("lab {name}: {error}"),))?;
    }
    to_python(py, &labs)
}

/// Run the GPU validation suite on this machine, with no lab and no cluster (`gpulab test --local`):
/// nvidia-smi, PyTorch matmul and bandwidth, NCCL with two or more GPUs, a vLLM smoke test with
/// `vllm_model` (or none), each GPU judged against the datasheet of the model nvidia-smi names.
///
/// `python` is the interpreter with PyTorch that runs the checks (a path, or a name on the PATH); by
/// default the one running this code, `sys.executable`. Without a GPU every check says so and the
/// report does not pass; nothing is raised.
#[pyfunction]
#[pyo3(
    signature = (python=None, vllm_model=Some(DEFAULT_VLLM_MODEL.to_string()), nccl=true, repeats=10, expected_gpus=None),
    text_signature = "(python=None, vllm_model='facebook/opt-125m', nccl=True, repeats=10, expected_gpus=None)"
)]
pub(crate) fn test_local(
    py: Python<'_>,
    python: Option<PathBuf>,
    vllm_model: Option<String>,
    nccl: bool,
    repeats: u32,
    expected_gpus: Option<u32>,
) -> PyResult<GpuReport> {
    let python: PathBuf = match python {
        Some(path) => path,
        None => py.import("sys")?.getattr("executable")?.extract()?,
    };
    let options = CheckOptions {
        expected_gpus,
        repeats,
        nccl,
        vllm_model,
        python: Some(python.display().to_string()),
        ..Default::default()
    };
    let report = wait(py, None, move |_| async move {
        gpulab_core::Lab::test_local(&options).await
    })?;
    Ok(GpuReport { report })
}

/// How a command in the workspace ended, and what it printed.
#[pyclass(module = "gpulab._gpulab", frozen, get_all)]
pub(crate) struct ExecResult {
    /// Its standard output (invalid UTF-8 replaced).
    pub(crate) stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub(crate) stderr: String,
    /// Its exit code; 128 + the signal's number when a signal killed it.
    pub(crate) exit_code: i32,
    /// The signal that killed it ("KILL"), if one did.
    pub(crate) signal: Option<String>,
}

#[pymethods]
impl ExecResult {
    /// True when it exited with code 0.
    #[getter]
    fn ok(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none()
    }

    fn __repr__(&self) -> String {
        format!(
            "ExecResult(exit_code={}, stdout={:?}, stderr={:?})",
            self.exit_code, self.stdout, self.stderr
        )
    }
}

/// A local port forwarded to a port in the workspace; closes on `close()` or at the end of a `with`
/// block.
#[pyclass(module = "gpulab._gpulab", frozen)]
pub(crate) struct Forward {
    local_port: u16,
    remote_port: u16,
    handle: Mutex<Option<ForwardHandle>>,
}

#[pymethods]
impl Forward {
    /// The port it listens on, on 127.0.0.1.
    #[getter]
    fn local_port(&self) -> u16 {
        self.local_port
    }

    /// The port in the workspace.
    #[getter]
    fn remote_port(&self) -> u16 {
        self.remote_port
    }

    /// `127.0.0.1:PORT`.
    #[getter]
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.local_port)
    }

    /// Connections forwarded so far.
    #[getter]
    fn connections(&self) -> u64 {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, ForwardHandle::connections)
    }

    /// True until closed.
    #[getter]
    fn open(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Stop listening and end the forwarded connections; returns once the port is free.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        close_forward(py, handle)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Forward(127.0.0.1:{} -> workspace:{}{})",
            self.local_port,
            self.remote_port,
            if self.open() { "" } else { ", closed" }
        )
    }
}

/// What `test_gpu` or `test_local` found: the tools' answers and a verdict per check.
#[pyclass(module = "gpulab._gpulab", frozen)]
pub(crate) struct GpuReport {
    report: CoreGpuReport,
}

#[pymethods]
impl GpuReport {
    /// True when no check failed or was unavailable.
    #[getter]
    fn passed(&self) -> bool {
        self.report.passed()
    }

    /// The verdict as rows: (check, status, detail).
    #[getter]
    fn rows(&self) -> Vec<(String, String, String)> {
        self.report.rows()
    }

    /// The whole report as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.report)
    }

    fn __repr__(&self) -> String {
        let failures = self.report.failures().count();
        format!(
            "GpuReport({}, {} checks, {})",
            self.report.instance.as_deref().unwrap_or("this machine"),
            self.report.checks.len(),
            if failures == 0 {
                "passed".to_string()
            } else {
                format!("{failures} failed")
            }
        )
    }
}
