#!/usr/bin/env bash
# gpulab Slurm setup: a single-node cluster in the workspace. gpulab renders slurm.conf and gres.conf from
# the CPUs, memory and GPUs it detected in the pod and passes them in GPULAB_SLURM_CONF and
# GPULAB_GRES_CONF. Idempotent: installs only what is missing, keeps an existing munge key, restarts the
# daemons with the new configuration.
set -euo pipefail
log() { echo "[gpulab-slurm] $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# On a workspace volume, the packages and the key are kept there: the workspace's own setup reinstalls
# what $STATE/apt-packages names from the .debs in the volume's apt cache and puts the key back on every
# pod start, so a restart keeps Slurm installed and its credentials valid without the network.
STATE=/workspace/.gpulab
CACHE=/workspace/.cache
APT=(apt-get)
if [ -d "$STATE" ]; then
  mkdir -p "$CACHE/apt/archives/partial" "$CACHE/apt/lists/partial"
  APT+=(-o "Dir::Cache::Archives=$CACHE/apt/archives" -o "Dir::State::Lists=$CACHE/apt/lists"
    -o APT::Keep-Downloaded-Packages=true)
fi
if ! have slurmctld || ! have slurmd || ! have munged || ! have srun; then
  if [ "${GPULAB_SLURM_INSTALL:-1}" != 1 ]; then
    echo "gpulab: slurm or munge is missing and installing is turned off" >&2
    exit 3
  fi
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  "${APT[@]}" update -qq
  "${APT[@]}" install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if [ -d "$STATE" ]; then
  touch "$STATE/apt-packages"
  for pkg in slurm-wlm munge; do
    grep -qx "$pkg" "$STATE/apt-packages" || echo "$pkg" >>"$STATE/apt-packages"
  done
fi

# munge: one key, the daemon running as its own user.
install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 755 /run/munge
if [ ! -s /etc/munge/munge.key ] && [ -s "$STATE/munge.key" ]; then
  install -o munge -g munge -m 400 "$STATE/munge.key" /etc/munge/munge.key
fi
if [ ! -s /etc/munge/munge.key ]; then
  log "creating the munge key"
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if [ -d "$STATE" ] && ! cmp -s /etc/munge/munge.key "$STATE/munge.key"; then
  install -m 400 /etc/munge/munge.key "$STATE/munge.key"
fi
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  runuser -u munge -- munged
  for _ in $(seq 1 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi

# Configuration: /etc/slurm (Slurm 20.11+), and /etc/slurm-llnl where an older package reads it.
for dir in /etc/slurm /etc/slurm-llnl; do
  if [ "$dir" = /etc/slurm ] || [ -d "$dir" ]; then
    mkdir -p "$dir"
    printf '%s' "$GPULAB_SLURM_CONF" > "$dir/slurm.conf"
    printf '%s' "$GPULAB_GRES_CONF" > "$dir/gres.conf"
  fi
done
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm

# Restart the daemons so that they read the new configuration.
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
  if [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    for _ in $(seq 1 20); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$pidfile"
done
log "starting slurmctld and slurmd"
slurmctld
slurmd
for _ in $(seq 1 30); do
  case "$(sinfo -h -N -o %T 2>/dev/null | head -n1)" in
    idle* | mix* | alloc*) break ;;
    drain* | down*) scontrol update NodeName="$GPULAB_SLURM_NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
log "ready: $(sinfo -h -N -o '%N %T %G' 2>/dev/null | head -n1)"
