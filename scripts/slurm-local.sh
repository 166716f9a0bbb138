#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian's slurm-wlm and munge), and a sweep through it:
# `lottery sweep --slurm` writes and submits the job array, the script waits for it, checks that
# every run arrived in the results directory, and prints the table. Needs root or sudo (it installs
# the packages when missing and starts the daemons); everything else lives in a temporary folder
# and the daemons stop on exit.
#   bash scripts/slurm-local.sh [CONFIG]        (default: configs/quickstart.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/quickstart.toml}
LOTTERY=${LOTTERY:-./target/release/lottery}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-local: installing slurm-wlm and munge"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
fi
[ -x "$LOTTERY" ] || cargo build --release -p lottery-cli

state=$(mktemp -d -t lottery-slurm.XXXXXX)
chmod 755 "$state"
export SLURM_CONF="$state/slurm.conf"
host=$(hostname -s)
cpus=$(nproc)
mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.8)}')
cat > "$SLURM_CONF" <<CONF
ClusterName=lottery-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$state/ctld" "$state/slurmd"

# munge: a key and a socket of its own (the daemons run as root, hence --force).
munge_dir="$state/munge"
mkdir -p "$munge_dir"
chmod 700 "$munge_dir"
key="$munge_dir/munge.key"
dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
chmod 400 "$key"
socket="$munge_dir/munge.socket"
$SUDO munged --force --key-file="$key" --socket="$socket" --pid-file="$munge_dir/munged.pid" \
  --log-file="$munge_dir/munged.log" --seed-file="$munge_dir/munged.seed" 2>/dev/null
echo "AuthInfo=socket=$socket" >> "$SLURM_CONF"

stop() {
  scontrol shutdown >/dev/null 2>&1 || true
  sleep 1
  for f in "$state/slurmd.pid" "$state/slurmctld.pid" "$munge_dir/munged.pid"; do
    [ -f "$f" ] && $SUDO kill "$(cat "$f")" 2>/dev/null || true
  done
}
trap stop EXIT

$SUDO env SLURM_CONF="$SLURM_CONF" slurmctld
$SUDO env SLURM_CONF="$SLURM_CONF" slurmd
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo -h -o "%P %D %T %c" | sed 's/^/slurm-local: partition /'
sinfo -h -o %T | grep -q idle || { echo "slurm-local: the node never became idle"; cat "$state/slurmd.log" "$state/slurmctld.log" | tail -30; exit 1; }

results="$state/results"
t0=$(date +%s)
"$LOTTERY" sweep "$CONFIG" --slurm --results "$results" --cpus-per-task 1
for _ in $(seq 1800); do
  [ -z "$(squeue -h 2>/dev/null)" ] && break
  sleep 1
done
echo "slurm-local: the array finished in $(( $(date +%s) - t0 ))s"
status=$("$LOTTERY" sweep "$CONFIG" --status --results "$results")
echo "$status"
echo "$status" | head -1 | grep -Eq ": ([0-9]+) runs: \1 finished" \
  || { echo "slurm-local: not every run arrived"; tail -n 20 "$results"/.sweeps/*/slurm/logs/*.log; exit 1; }
study=$(sed -n 's/^study *= *"\(.*\)"/\1/p' "$CONFIG" | head -1)
"$LOTTERY" table "$study" --results "$results"
echo "slurm-local: ok"
