#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine (127.0.0.1), built from Debian's packages, for
# lit_tf's SLURM multiruns and sweeps (hydra/launcher=slurm) and for tests/cluster/.
#
#   scripts/local_slurm.sh up       start munged, mariadbd, slurmdbd, slurmctld, slurmd (in that order)
#   scripts/local_slurm.sh env      print the `export SLURM_CONF=...` line every SLURM client needs
#   scripts/local_slurm.sh status   what runs, sinfo and squeue
#   scripts/local_slurm.sh down     cancel every job, wait for an empty queue, stop the daemons
#
# Every file the cluster writes (configs, state, spool, pid files, logs, the accounting database)
# lives in one folder: $LIT_TF_SLURM_DIR, or else a fresh folder under ${TMPDIR:-/tmp} whose path
# is remembered in ${TMPDIR:-/tmp}/lit_tf_slurm.current so that env/status/down find it again.
# Ports: slurmctld $LIT_TF_SLURM_PORT (6817), slurmd +1, slurmdbd +2.
# Needs root (the daemons run as root, munge and mysql) and the apt packages
#   slurm-wlm munge slurmdbd mariadb-server
# It is idempotent: `up` on a running cluster only prints the export line again; `down` on a
# stopped one does nothing.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin

APT_PACKAGES="slurm-wlm munge slurmdbd mariadb-server"
POINTER="${TMPDIR:-/tmp}/lit_tf_slurm.current"
MARKER=".lit_tf_slurm"          # marks a folder made by this script (`down` never touches others)
CLUSTER=littf
PARTITION=debug

die() { echo "local_slurm: error: $*" >&2; exit 1; }
say() { echo "local_slurm: $*"; }

usage() {
  echo "usage: $0 up|down|status|env   (state folder: \$LIT_TF_SLURM_DIR, else a fresh one under ${TMPDIR:-/tmp})" >&2
  exit 2
}

# --------------------------------------------------------------------------------- locations
known_dir() {  # the folder of the cluster to act on: $LIT_TF_SLURM_DIR, $SLURM_CONF's, the remembered one
  if [[ -n ${LIT_TF_SLURM_DIR:-} ]]; then
    echo "$LIT_TF_SLURM_DIR"
  elif [[ -n ${SLURM_CONF:-} && -f "$(dirname "$(dirname "$SLURM_CONF")")/$MARKER" ]]; then
    dirname "$(dirname "$SLURM_CONF")"
  elif [[ -f $POINTER ]]; then
    cat "$POINTER"
  fi
}

set_paths() {
  D=$(realpath -m "$1")
  CONF="$D/etc/slurm.conf"
  DBD_CONF="$D/etc/slurmdbd.conf"
  MUNGE_SOCKET="$D/munge/munge.socket.2"
  MUNGE_PID="$D/munge/munged.pid"
  MYSQL_SOCKET="$D/mysql/mysqld.sock"
  MYSQL_PID="$D/mysql/mariadbd.pid"
  DBD_PID="$D/run/slurmdbd.pid"
  CTLD_PID="$D/run/slurmctld.pid"
  SLURMD_PID="$D/run/slurmd.pid"
  if [[ -f "$D/ports" ]]; then read -r CTLD_PORT < "$D/ports"; else CTLD_PORT=${LIT_TF_SLURM_PORT:-6817}; fi
  SLURMD_PORT=$((CTLD_PORT + 1))
  DBD_PORT=$((CTLD_PORT + 2))
  export SLURM_CONF="$CONF"
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() {  # wait_until SECONDS WHAT LOG CMD...: poll CMD every 0.2 s until it succeeds or time is up
  local limit=$1 what=$2 log=$3
  shift 3
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      echo "local_slurm: error: $what not ready after ${limit}s; last lines of $log:" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
}

# --------------------------------------------------------------------------------- checks
check_packages() {
  local missing=() bin pkg
  for pair in munged:munge mungekey:munge mariadbd:mariadb-server mariadb-install-db:mariadb-server \
              mariadb-admin:mariadb-client slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd \
              sbatch:slurm-client scontrol:slurm-client sacctmgr:slurm-client sacct:slurm-client \
              sinfo:slurm-client squeue:slurm-client scancel:slurm-client runuser:util-linux; do
    bin=${pair%%:*}
    pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin ($pkg)")
  done
  if ((${#missing[@]})); then
    die "missing ${missing[*]}; install with: apt-get install -y $APT_PACKAGES"
  fi
  for lib in /usr/lib/*/slurm-wlm /usr/lib/slurm-wlm /usr/lib/slurm; do
    [[ -e $lib/accounting_storage_mysql.so ]] && return 0
  done
  die "slurmdbd's MySQL plugin (accounting_storage_mysql.so) missing: apt-get install -y slurm-wlm-mysql-plugin"
}

check_root() {
  [[ $(id -u) -eq 0 ]] || die "needs root: it starts munged and mariadbd as users munge and mysql, and slurmd as root"
  id munge >/dev/null 2>&1 || die "user 'munge' missing (reinstall the munge package)"
  id mysql >/dev/null 2>&1 || die "user 'mysql' missing (reinstall the mariadb-server package)"
}

check_port() {
  if ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; then
    die "port $1 ($2) is in use (another SLURM?); pick other ports with LIT_TF_SLURM_PORT=<free port, +1, +2>"
  fi
}

# --------------------------------------------------------------------------------- configs
write_configs() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 85 / 100 ))
  cat > "$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on 127.0.0.1; every path under $D.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again after 10 s instead of the default 120
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
# no cgroups needed: processes are tracked by parentage, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# cores are the consumable resource; memory is not enforced
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# schedule (and start a requeued job) every 2 s instead of every minute
SchedulerParameters=bf_interval=2,sched_interval=2
JobRequeue=1
ReturnToService=2
KillWait=30
MailProg=/bin/true
StateSaveLocation=$D/slurmctld
SlurmdSpoolDir=$D/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# with slurmdbd this is the munge socket that clients and slurmctld use to reach it
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$DBD_CONF" <<EOF
# Written by scripts/local_slurm.sh: accounting in the MariaDB of $D/mysql (local socket only).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$DBD_PID
LogFile=$D/log/slurmdbd.log
DebugLevel=info
EOF
  chmod 600 "$DBD_CONF"
}

# --------------------------------------------------------------------------------- up
start_munged() {
  if alive "$MUNGE_PID"; then say "munged already running (pid $(cat "$MUNGE_PID"))"; return; fi
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # the cluster's own key: only this munged reads it (clients talk to it through the socket)
  if [[ ! -f $D/munge/munge.key ]]; then
    runuser -u munge -- mungekey --create --keyfile="$D/munge/munge.key" || die "mungekey could not create a key"
  fi
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" --key-file="$D/munge/munge.key" \
    || die "munged did not start; see $D/munge/munged.log"
  wait_until 15 munged "$D/munge/munged.log" test -S "$MUNGE_SOCKET"
  say "munged started (pid $(cat "$MUNGE_PID"))"
}

start_mariadb() {
  if alive "$MYSQL_PID"; then say "mariadbd already running (pid $(cat "$MYSQL_PID"))"; return; fi
  if [[ ! -d $D/mysql/data/mysql ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$D/mysql/data" \
      --auth-root-authentication-method=socket --skip-test-db > "$D/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed; see $D/log/mariadb-install.log"
  fi
  rm -f "$MYSQL_SOCKET"
  # --skip-networking: the database listens on its socket in $D only
  setsid mariadbd --no-defaults --user=mysql --datadir="$D/mysql/data" --socket="$MYSQL_SOCKET" \
    --pid-file="$MYSQL_PID" --skip-networking --log-error="$D/mysql/mariadbd.err" \
    < /dev/null > /dev/null 2>&1 &
  wait_until 60 mariadbd "$D/mysql/mariadbd.err" mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" ping
  wait_until 10 "mariadbd pid file" "$D/mysql/mariadbd.err" test -s "$MYSQL_PID"
  say "mariadbd started (pid $(cat "$MYSQL_PID"))"
}

start_slurmdbd() {
  if alive "$DBD_PID"; then say "slurmdbd already running (pid $(cat "$DBD_PID"))"; return; fi
  check_port "$DBD_PORT" slurmdbd
  # slurmdbd reaches MariaDB through the client library's default socket, which this variable moves
  MYSQL_UNIX_PORT="$MYSQL_SOCKET" slurmdbd || die "slurmdbd did not start; see $D/log/slurmdbd.log"
  wait_until 60 slurmdbd "$D/log/slurmdbd.log" sacctmgr -n -P list cluster
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" > /dev/null || die "sacctmgr could not add cluster $CLUSTER"
  fi
  say "slurmdbd started (pid $(cat "$DBD_PID"))"
}

ctld_up() { scontrol ping | grep -q "UP"; }

start_slurmctld() {
  if alive "$CTLD_PID"; then say "slurmctld already running (pid $(cat "$CTLD_PID"))"; return; fi
  check_port "$CTLD_PORT" slurmctld
  slurmctld || die "slurmctld did not start; see $D/log/slurmctld.log"
  wait_until 30 slurmctld "$D/log/slurmctld.log" ctld_up
  say "slurmctld started (pid $(cat "$CTLD_PID"))"
}

node_idle() { sinfo -h -o %T | grep -Eq '^(idle|mixed|allocated)'; }

start_slurmd() {
  if alive "$SLURMD_PID"; then say "slurmd already running (pid $(cat "$SLURMD_PID"))"; return; fi
  check_port "$SLURMD_PORT" slurmd
  slurmd -N "$(hostname -s)" || die "slurmd did not start; see $D/log/slurmd.log"
  wait_until 30 "node $(hostname -s)" "$D/log/slurmd.log" node_idle
  say "slurmd started (pid $(cat "$SLURMD_PID"))"
}

any_alive() {
  alive "$MUNGE_PID" || alive "$MYSQL_PID" || alive "$DBD_PID" || alive "$CTLD_PID" || alive "$SLURMD_PID"
}

cmd_up() {
  check_packages
  check_root
  local dir
  dir=$(known_dir)
  if [[ -z ${LIT_TF_SLURM_DIR:-} ]]; then
    # without LIT_TF_SLURM_DIR: the remembered cluster while any of its daemons runs (the missing
    # ones are started again), else a fresh folder with a clean state
    if [[ -n $dir && -f $dir/$MARKER ]]; then set_paths "$dir"; fi
    if [[ -z $dir || ! -f $dir/$MARKER ]] || ! any_alive; then
      dir=$(mktemp -d "${TMPDIR:-/tmp}/lit_tf_slurm.XXXXXX")
    fi
  fi
  if [[ -e $dir && ! -f $dir/$MARKER && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
    die "$dir is not empty and was not made by this script: give LIT_TF_SLURM_DIR a new or empty folder"
  fi
  mkdir -p "$dir"
  touch "$dir/$MARKER"
  set_paths "$dir"
  if [[ ! -f $D/ports ]]; then echo "$CTLD_PORT" > "$D/ports"; fi
  # munge and mysql must reach their folders: every folder on the way is at least traversable
  chmod 755 "$D"
  mkdir -p "$D/etc" "$D/log" "$D/run" "$D/slurmctld" "$D/slurmd" "$D/munge" "$D/mysql"
  chown munge:munge "$D/munge" && chmod 755 "$D/munge"  # munged: the socket folder must be world-traversable
  chown mysql:mysql "$D/mysql" && chmod 750 "$D/mysql"
  # remember a folder made here (env/status/down find it); one named by LIT_TF_SLURM_DIR is found through it
  if [[ -z ${LIT_TF_SLURM_DIR:-} ]]; then echo "$D" > "$POINTER"; fi
  # configs are (re)written only while no SLURM daemon runs that read them
  if [[ ! -f $CONF ]] || ! { alive "$DBD_PID" || alive "$CTLD_PID" || alive "$SLURMD_PID"; }; then write_configs; fi
  start_munged
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  say "cluster '$CLUSTER' is up: partition $PARTITION, node $(hostname -s), $(nproc) CPUs; state in $D"
  say "every SLURM command (and hydra/launcher=slurm) needs this in your shell:"
  echo "export SLURM_CONF=$CONF"
}

# --------------------------------------------------------------------------------- down
stop_daemon() {  # stop_daemon NAME PIDFILE: SIGTERM, wait for it to go, SIGKILL if it would not
  local name=$1 pidfile=$2 pid
  if ! alive "$pidfile"; then rm -f "$pidfile"; return; fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  local end=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= end)); then
      echo "local_slurm: $name (pid $pid) ignored SIGTERM for 30s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  say "$name stopped"
}

queue_empty() { [[ -z "$(squeue -h -o %i 2>/dev/null)" ]]; }

cmd_down() {
  local dir
  dir=$(known_dir)
  if [[ -z $dir || ! -f $dir/$MARKER ]]; then say "no cluster of this script is known: nothing to stop"; return; fi
  set_paths "$dir"
  if alive "$CTLD_PID"; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      wait_until 120 "an empty queue" "$D/log/slurmctld.log" queue_empty
    fi
  fi
  stop_daemon slurmd "$SLURMD_PID"
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon slurmdbd "$DBD_PID"
  stop_daemon mariadbd "$MYSQL_PID"
  stop_daemon munged "$MUNGE_PID"
  if [[ -f $POINTER && "$(cat "$POINTER")" == "$D" ]]; then rm -f "$POINTER"; fi
  say "cluster stopped; its files (logs, accounting) stay in $D"
}

# --------------------------------------------------------------------------------- status / env
cmd_status() {
  local dir ok=0
  dir=$(known_dir)
  if [[ -z $dir || ! -f $dir/$MARKER ]]; then say "no cluster of this script is known (run: $0 up)"; exit 1; fi
  set_paths "$dir"
  echo "state folder: $D"
  for pair in "munged:$MUNGE_PID" "mariadbd:$MYSQL_PID" "slurmdbd:$DBD_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
    if alive "${pair#*:}"; then
      printf '  %-10s running (pid %s)\n' "${pair%%:*}" "$(cat "${pair#*:}")"
    else
      printf '  %-10s stopped\n' "${pair%%:*}"
      ok=1
    fi
  done
  if alive "$CTLD_PID"; then
    sinfo || true
    squeue || true
  fi
  echo "export SLURM_CONF=$CONF"
  exit $ok
}

cmd_env() {
  local dir
  dir=$(known_dir)
  if [[ -z $dir || ! -f $dir/$MARKER || ! -f $dir/etc/slurm.conf ]]; then
    die "no cluster of this script is known (run: $0 up)"
  fi
  set_paths "$dir"
  echo "export SLURM_CONF=$CONF"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
