#!/usr/bin/env bash
# gpulab workspace setup. The pod runs this on every start, so it is idempotent: each step checks
# before it acts, and everything it installs or downloads lives on the /workspace volume, so a restart
# reuses it (no apt-get update, no download, no pip resolve) and takes seconds.
# Ready means set up: sshd starts last, and the pod's readiness probe waits for it.
#
# What it installs comes from the pod's environment, rendered from the lab's spec and the version
# matrix for its GPU generation (`gpulab plan` shows them):
#   GPULAB_APT_PACKAGES   system packages besides sshd and Python
#   GPULAB_TORCH          the PyTorch requirement ("torch==2.8.0"), GPULAB_TORCH_INDEX its wheel index
#   GPULAB_PIP_PACKAGES   the other Python requirements ("vllm==0.11.0 transformers==4.57.1 ...")
#   GPULAB_JUPYTER_PACKAGES  Jupyter Lab and ipykernel, pinned, installed while GPULAB_JUPYTER=1
#   GPULAB_VENV           the venv every way in uses (default /workspace/.venv)
# and every way in (exec through the API server, `bash -lc`, SSH sessions, the Jupyter kernel, Slurm
# jobs) gets the same environment: the pod's PATH (the venv first), the cache variables and the
# NVIDIA/CUDA/vLLM settings, written to /etc/gpulab/env.sh (login shells via /etc/profile.d, non-login
# bash via BASH_ENV) and /etc/environment (SSH sessions, through PAM).
set -euo pipefail

started=$SECONDS
log() { echo "[gpulab-setup] $(date -u +%H:%M:%S) $*"; }

STATE=/workspace/.gpulab
CACHE=/workspace/.cache
VENV="${GPULAB_VENV:-/workspace/.venv}"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$CACHE/pip}"
mkdir -p "$STATE" "$CACHE/apt/archives/partial" "$CACHE/apt/lists/partial" "$PIP_CACHE_DIR"
# Every cache the pod's environment points at exists on the volume before anything uses it.
for var in HF_HOME VLLM_CACHE_ROOT TRITON_CACHE_DIR TORCHINDUCTOR_CACHE_DIR TORCH_HOME CUDA_CACHE_PATH XDG_CACHE_HOME; do
  [ -n "${!var:-}" ] && mkdir -p "${!var}"
done

# 1. System packages. The package lists and the .debs live on the volume: the container's root
#    filesystem starts afresh on every pod start, and a restart reinstalls from the cache without
#    touching the network. Packages gpulab installed at any time (Slurm's too) are remembered in
#    $STATE/apt-packages and come back on every start.
#    dpkg skips its fsyncs (--force-unsafe-io): the root filesystem is thrown away with the pod anyway,
#    and the syncs are most of a restart's reinstall.
APT=(apt-get -o "Dir::Cache::Archives=$CACHE/apt/archives" -o "Dir::State::Lists=$CACHE/apt/lists"
  -o APT::Keep-Downloaded-Packages=true -o Dpkg::Use-Pty=0 -o "Dpkg::Options::=--force-unsafe-io")
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {
  if ! ls "$CACHE/apt/lists/" 2>/dev/null | grep -q '_Packages'; then
    "${APT[@]}" update -qq
  fi
  # Cached lists can be older than the mirror (a package superseded): refresh once and retry.
  "${APT[@]}" install -y -qq --no-install-recommends "$@" ||
    { "${APT[@]}" update -qq && "${APT[@]}" install -y -qq --no-install-recommends "$@"; }
}
have() { command -v "$1" >/dev/null 2>&1; }
wanted_apt=()
have sshd || [ -x /usr/sbin/sshd ] || wanted_apt+=(openssh-server)
have python3 || wanted_apt+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || wanted_apt+=(python3-venv)
touch "$STATE/apt-packages"
# shellcheck disable=SC2086
for pkg in ${GPULAB_APT_PACKAGES:-} $(cat "$STATE/apt-packages"); do
  [[ " ${wanted_apt[*]} " == *" $pkg "* ]] || installed "$pkg" || wanted_apt+=("$pkg")
done
if ((${#wanted_apt[@]})); then
  log "installing system packages: ${wanted_apt[*]}"
  apt_install "${wanted_apt[@]}"
  for pkg in "${wanted_apt[@]}"; do
    grep -qx "$pkg" "$STATE/apt-packages" || echo "$pkg" >>"$STATE/apt-packages"
  done
else
  log "system packages present"
fi
# The activity reporter (autostop's eyes: SSH sessions, kernels, Slurm jobs, vLLM requests, the GPU),
# on the system Python, as soon as there is one: it answers only the agent, with the lab's token.
reporter="$(dirname "${BASH_SOURCE[0]}")/activity.py"
if [ -r "$reporter" ]; then
  nohup python3 "$reporter" serve --port 9102 >"$STATE/activity.log" 2>&1 &
fi
# The munge key Slurm's setup kept on the volume, so jobs and credentials survive a restart.
if [ -s "$STATE/munge.key" ] && getent passwd munge >/dev/null; then
  install -d -o munge -g munge -m 700 /etc/munge
  install -o munge -g munge -m 400 "$STATE/munge.key" /etc/munge/munge.key
fi

# 2. Python: one venv on the volume, used by every way in. A venv whose creation was interrupted (no
#    completion mark, or a python that cannot import pip) is removed and made again. On an image built
#    by `gpulab image build`, the packages live in /opt/venv; the venv sees them through a .pth file,
#    so nothing is installed here, and what the user installs later lands on the volume.
if [ -d "$VENV" ] && { [ ! -e "$VENV/.gpulab-complete" ] || ! "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; }; then
  if "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1 && [ -e "$VENV/pyvenv.cfg" ]; then
    touch "$VENV/.gpulab-complete"  # a venv made before the mark existed
  else
    log "repairing $VENV (an earlier creation did not finish)"
    rm -rf "$VENV"
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  base=python3
  [ -x /opt/venv/bin/python ] && base=/opt/venv/bin/python
  "$base" -m venv --system-site-packages "$VENV"
  if [ -x /opt/venv/bin/python ]; then
    image_site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$image_site" >"$venv_site/gpulab-image-venv.pth"
  fi
  touch "$VENV/.gpulab-complete"
fi
PY="$VENV/bin/python"
# The requirements not yet satisfied: name missing, or a different version than an exact pin.
unsatisfied() {
  "$PY" - "$@" <<'PYTHON'
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, pin = req.partition("==")
    name = name.split("[")[0].strip()
    for sep in "<>=!~; ":
        name = name.split(sep)[0]
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(req)
        continue
    if pin and have.split("+")[0] != pin.strip().split("+")[0]:
        print(req)
PYTHON
}
wanted_pip=()
# shellcheck disable=SC2086
mapfile -t wanted_pip < <(unsatisfied ${GPULAB_PIP_PACKAGES:-})
if [ "${GPULAB_JUPYTER:-1}" = 1 ]; then
  mapfile -t -O "${#wanted_pip[@]}" wanted_pip < <(unsatisfied ${GPULAB_JUPYTER_PACKAGES:-jupyterlab ipykernel})
fi
if [ -n "${GPULAB_TORCH:-}" ] && [ -n "$(unsatisfied "$GPULAB_TORCH")" ]; then
  # PyTorch first and from its own index: the wheel for this GPU generation's CUDA (vLLM's pin on torch
  # is then already satisfied).
  log "installing $GPULAB_TORCH from ${GPULAB_TORCH_INDEX:-the default index} (first start only; cached on /workspace)"
  "$PY" -m pip install --quiet ${GPULAB_TORCH_INDEX:+--index-url "$GPULAB_TORCH_INDEX"} "$GPULAB_TORCH"
fi
if ((${#wanted_pip[@]})); then
  log "installing Python packages: ${wanted_pip[*]} (first start only; cached on /workspace)"
  # With the torch pin in the same resolver run, nothing replaces the build installed above.
  "$PY" -m pip install --quiet ${GPULAB_TORCH:+"$GPULAB_TORCH"} "${wanted_pip[@]}"
else
  log "Python packages present"
fi

# 3. One environment for every way in, from the pod's own: the venv first on PATH, the caches on the
#    volume, the GPU and vLLM settings.
export VIRTUAL_ENV="$VENV"
case ":$PATH:" in *":$VENV/bin:"*) ;; *) PATH="$VENV/bin:$PATH" ;; esac
export PATH BASH_ENV=/etc/gpulab/env.sh
install -d -m 755 /etc/gpulab /etc/profile.d
forwarded='^(PATH|VIRTUAL_ENV|BASH_ENV|PIP_CACHE_DIR|XDG_CACHE_HOME|HF_HOME|HF_[A-Z_]+|TRANSFORMERS_CACHE|VLLM_[A-Z_]+|TRITON_CACHE_DIR|TORCHINDUCTOR_CACHE_DIR|TORCH_HOME|CUDA_CACHE_PATH|NVIDIA_[A-Z_]+|CUDA_[A-Z_]+|LD_LIBRARY_PATH|NCCL_[A-Z_]+|PYTHONUNBUFFERED)$'
{
  echo "# Written by gpulab's workspace setup on every start: the pod's environment, for every way in."
  while IFS= read -r name; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done < <(compgen -e | grep -E "$forwarded" | sort)
} >/etc/gpulab/env.sh
{
  while IFS= read -r name; do
    printf '%s="%s"\n' "$name" "${!name}"
  done < <(compgen -e | grep -E "$forwarded" | sort)
} >/etc/environment
printf '# gpulab: the workspace environment (the venv, caches on /workspace)\n. /etc/gpulab/env.sh\n' \
  >/etc/profile.d/gpulab.sh
grep -q gpulab /root/.bashrc 2>/dev/null || echo "cd /workspace  # gpulab" >>/root/.bashrc

# 4. SSH: root with the user's key only; the host key is the one gpulab generated, so the client can
#    verify it from the first connection.
install -d -m 700 /root/.ssh
install -m 600 /etc/gpulab/ssh-keys/authorized_keys /root/.ssh/authorized_keys
install -m 600 /etc/gpulab/ssh-host/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
install -m 644 /etc/gpulab/ssh-host/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 755 /etc/ssh/sshd_config.d /run/sshd
cat >/etc/ssh/sshd_config.d/gpulab.conf <<CONF
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
ClientAliveInterval 60
CONF
grep -q '^Include /etc/ssh/sshd_config.d' /etc/ssh/sshd_config 2>/dev/null ||
  sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config

# 5. Jupyter from the venv, with its kernel registered from the venv, and the token from the lab's
#    secret: notebooks see what is installed over SSH.
if [ "${GPULAB_JUPYTER:-1}" = 1 ] && [ -n "${JUPYTER_TOKEN:-}" ]; then
  "$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (gpulab venv)" >/dev/null
  log "starting Jupyter Lab on port 8888"
  nohup "$PY" -m jupyter lab --no-browser --allow-root --ip="${GPULAB_JUPYTER_IP:-127.0.0.1}" --port=8888 \
    --ServerApp.token="$JUPYTER_TOKEN" --ServerApp.root_dir=/workspace >"$STATE/jupyter.log" 2>&1 &
fi

log "set up in $((SECONDS - started))s"
log "Starting SSH service"
exec /usr/sbin/sshd -D -e
