//! The suite on the machine gpulab runs on (`gpulab test --local`, `gpulab.test_local()`): the same
//! scripts through [`LocalExec`], judged against the catalog model of the GPU nvidia-smi and PyTorch
//! name rather than a lab's instance type.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{CheckOptions, GpuReport, Place, Reference, Runner};
use crate::Result;
use crate::remote::local::LocalExec;

/// The interpreters looked for on the PATH when none is given, in order.
const PYTHON_NAMES: &[&str] = &["python3", "python"];

/// True for a file this user may run.
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// `name` in the directories of this process's PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The Python the local checks use when none is given: the first of `python3` and `python` on this
/// machine's PATH.
pub fn find_python() -> Option<PathBuf> {
    PYTHON_NAMES.iter().find_map(|name| on_path(name))
}

/// How long a named interpreter may take to say which Python it is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Check that `path` runs Python 3, by asking it to print its major version.
fn check_is_python3(path: &Path) -> std::result::Result<(), String> {
    let mut child = std::process::Command::new(path)
        .args([
            "-c",
            "import sys; sys.stdout.write(str(sys.version_info[0]))",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not answer as a Python interpreter within {}s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let mut answer = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut answer);
    }
    match answer.trim() {
        "3" => Ok(()),
        _ => Err("is not a Python 3 interpreter (asked to run Python, it did not)".into()),
    }
}

/// The interpreter a user named (`--python`, `python=`): a path to an executable file, kept as given
/// (a virtual environment's `bin/python` is a link that must not be resolved), or a name found on the
/// PATH; either must run Python 3. The error says what is wrong with it, for the frontend to name its
/// flag.
pub fn resolve_python(python: &str) -> std::result::Result<PathBuf, String> {
    if python.trim().is_empty() {
        return Err("is empty: give the path of a Python interpreter".into());
    }
    let path = if !python.contains(std::path::MAIN_SEPARATOR) && !python.contains('/') {
        on_path(python).ok_or_else(|| "not found on the PATH".to_string())?
    } else {
        let path = PathBuf::from(python);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("no such file".into());
            }
            Err(e) => return Err(format!("cannot be read: {e}")),
            Ok(meta) if meta.is_dir() => {
                return Err("is a directory, not a Python interpreter".into());
            }
            Ok(_) if !is_executable(&path) => return Err("is not an executable file".into()),
            Ok(_) => path,
        }
    };
    check_is_python3(&path)?;
    Ok(path)
}

/// Run the validation suite on this machine: nvidia-smi, PyTorch matmul and bandwidth, NCCL with two or
/// more GPUs, vLLM, each with `options.python` (else [`find_python`]), with no lab and no cluster. Each
/// GPU is judged against the catalog model its product name identifies
/// ([`catalog::identify_gpu`](crate::catalog::identify_gpu)); one the catalog lacks is measured, not
/// judged. On a machine without a GPU every check says what is missing, and the report fails.
pub async fn run_local_gpu_checks(options: &CheckOptions) -> Result<GpuReport> {
    let exec = LocalExec::new();
    let mut options = options.clone();
    if options.python.is_none() {
        // With none on the PATH, "python3" still runs: it is not found, and each check says so.
        let found = find_python().map(|p| p.display().to_string());
        options.python = Some(found.unwrap_or_else(|| PYTHON_NAMES[0].to_string()));
    }
    let runner = Runner {
        exec: &exec,
        options: &options,
        place: Place::Local,
    };
    let (smi, torch) = runner.inventory().await?;
    let reference =
        Reference::detect(&smi, &torch, options.expected_gpus).with_thresholds(options.thresholds);
    runner.finish(reference, smi, torch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pythons_are_resolved_or_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in that answers the version question as Python 3 would.
        let script = dir.path().join("python");
        std::fs::write(&script, "#!/bin/sh\nprintf 3\n").unwrap();
        let plain = script.display().to_string();
        assert_eq!(
            resolve_python(&plain).unwrap_err(),
            "is not an executable file"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(resolve_python(&plain).unwrap(), script);
            // A program, but not a Python.
            let not_python = dir.path().join("true");
            std::fs::write(&not_python, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&not_python, std::fs::Permissions::from_mode(0o755)).unwrap();
            let err = resolve_python(&not_python.display().to_string()).unwrap_err();
            assert!(err.starts_with("is not a Python 3 interpreter"), "{err}");
        }
        let missing = dir.path().join("nope").display().to_string();
        assert_eq!(resolve_python(&missing).unwrap_err(), "no such file");
        let folder = dir.path().display().to_string();
        assert!(resolve_python(&folder).unwrap_err().contains("directory"));
        assert!(resolve_python(" ").unwrap_err().contains("empty"));
        assert_eq!(
            resolve_python("no-such-python-gpulab").unwrap_err(),
            "not found on the PATH"
        );
        // A bare name is looked up on the PATH and must run Python too: `sh` is found and refused.
        let err = resolve_python("sh").unwrap_err();
        assert!(err.starts_with("is not a Python 3 interpreter"), "{err}");
        if let Some(python) = find_python() {
            let name = python.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(resolve_python(&name).unwrap(), python);
        }
    }
}
