#!/usr/bin/env bash
# gpulab workspace setup. The pod runs this on every start, so it is idempotent: each step checks
# before it acts, and downloads are cached on the /workspace volume, so a restart takes seconds.
# Ready means set up: sshd starts last, and the pod's readiness probe waits for it.
set -euo pipefail

log() { echo "[gpulab-setup] $(date -u +%H:%M:%S) $*"; }

CACHE=/workspace/.gpulab
VENV=/workspace/.venv
export DEBIAN_FRONTEND=noninteractive PIP_CACHE_DIR="$CACHE/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$CACHE/pip" "$CACHE/apt/partial"

# 1. System packages: only those missing from the image. The .debs are cached on the volume, because
#    the container's root filesystem starts afresh on every pod start.
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have sshd || missing+=(openssh-server)
have python3 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
for tool in git curl tmux htop vim rsync; do have "$tool" || missing+=("$tool"); done
have gcc || missing+=(build-essential)
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  apt-get -o Dir::Cache::Archives="$CACHE/apt" update -qq
  apt-get -o Dir::Cache::Archives="$CACHE/apt" install -y -qq --no-install-recommends "${missing[@]}"
else
  log "system packages present"
fi

# 2. Python: a virtualenv on the volume, so packages survive restarts. It sees the image's own
#    packages too, so a prebuilt image (gpulab image build) installs nothing here.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv --system-site-packages "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
wanted=()
# vLLM pins the torch it needs, so it goes first in one resolver run.
python -c 'import vllm' >/dev/null 2>&1 || wanted+=(vllm)
python -c 'import torch' >/dev/null 2>&1 || wanted+=(torch)
python -c 'import transformers' >/dev/null 2>&1 || wanted+=(transformers accelerate)
if [ "${GPULAB_JUPYTER:-1}" = 1 ]; then
  python -c 'import jupyterlab' >/dev/null 2>&1 || wanted+=(jupyterlab)
fi
if ((${#wanted[@]})); then
  log "installing Python packages: ${wanted[*]} (first start only; cached on /workspace)"
  pip install --quiet "${wanted[@]}"
else
  log "Python packages present"
fi

# 3. SSH: root with the user's key only; the host key is the one gpulab generated, so the client can
#    verify it from the first connection.
install -d -m 700 /root/.ssh
install -m 600 /etc/gpulab/ssh-keys/authorized_keys /root/.ssh/authorized_keys
install -m 600 /etc/gpulab/ssh-host/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
install -m 644 /etc/gpulab/ssh-host/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 755 /etc/ssh/sshd_config.d /run/sshd
cat > /etc/ssh/sshd_config.d/gpulab.conf <<CONF
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
ClientAliveInterval 60
CONF
grep -q '^Include /etc/ssh/sshd_config.d' /etc/ssh/sshd_config 2>/dev/null ||
  sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
# SSH sessions do not inherit the container's environment: hand them the CUDA and venv settings.
{
  env | grep -E '^(NVIDIA_|CUDA_|LD_LIBRARY_PATH=|HF_|PIP_CACHE_DIR=)' || true
  echo "PATH=$VENV/bin:$PATH"
  echo "VIRTUAL_ENV=$VENV"
} > /etc/environment
grep -q gpulab /root/.bashrc 2>/dev/null || echo "cd /workspace  # gpulab" >> /root/.bashrc

# 4. Jupyter, with the token from the lab's secret.
if [ "${GPULAB_JUPYTER:-1}" = 1 ] && [ -n "${JUPYTER_TOKEN:-}" ]; then
  log "starting Jupyter Lab on port 8888"
  nohup jupyter lab --no-browser --allow-root --ip="${GPULAB_JUPYTER_IP:-127.0.0.1}" --port=8888 \
    --ServerApp.token="$JUPYTER_TOKEN" --ServerApp.root_dir=/workspace >"$CACHE/jupyter.log" 2>&1 &
fi

log "Starting SSH service"
exec /usr/sbin/sshd -D -e
