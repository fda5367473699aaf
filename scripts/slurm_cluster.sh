#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, from Debian's packages, for atml's sweep tests and benchmarks.
#
#   scripts/slurm_cluster.sh start [--accounting slurmdbd|none] [--job-requeue 1|0]
#   scripts/slurm_cluster.sh stop      # stops only the daemons this script started (its pid files)
#   scripts/slurm_cluster.sh status    # exit 0 when the node is up and idle or mixed
#
# start installs what is missing (slurmctld, slurmd, slurm-client, munge; MariaDB + slurmdbd so that sacct works),
# without letting apt start any daemon (policy-rc.d), then starts munged, MariaDB, slurmdbd, slurmctld and slurmd as
# plain processes (no systemd needed), and returns when sinfo shows the node idle. It is idempotent: daemons already
# running are kept; a start with other --accounting / --job-requeue rewrites slurm.conf and restarts slurmctld only.
# Needs root (it writes /etc/slurm and starts the daemons); jobs run as the user who submits them.
set -euo pipefail

ACCOUNTING=slurmdbd
JOB_REQUEUE=1
ACTION=${1:-start}
shift || true
while (($#)); do
  case $1 in
    --accounting) ACCOUNTING=$2; shift 2 ;;
    --job-requeue) JOB_REQUEUE=$2; shift 2 ;;
    *) echo "slurm_cluster.sh: unknown option $1 (use --accounting slurmdbd|none, --job-requeue 1|0)" >&2; exit 2 ;;
  esac
done

RUN=/run/atml-slurm          # pid files of the daemons started here
STATE=/var/lib/atml-slurm    # slurmctld's state, slurmd's spool
LOGS=/var/log/atml-slurm
CONF=/etc/slurm/slurm.conf
CLUSTER=atml
DB_PASS=atml-slurm

alive() {  # the pid file's process is running and is that daemon (a dead daemon's pid may be reused)
  [[ -f $RUN/$1.pid ]] || return 1
  local pid
  pid=$(cat "$RUN/$1.pid")
  kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sbatch munged slurmdbd mariadbd; do command -v "$bin" >/dev/null || missing+=("$bin"); done
  ((${#missing[@]} == 0)) && return
  echo "slurm_cluster: installing Debian's Slurm, munge and MariaDB (missing: ${missing[*]})"
  local policy=/usr/sbin/policy-rc.d made=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
  ((made)) && rm -f "$policy"
  return 0
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048))
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
  local storage="accounting_storage/slurmdbd"
  [[ $ACCOUNTING == none ]] && storage="accounting_storage/none"
  cat >"$CONF.new" <<EOF
# Written by atml's scripts/slurm_cluster.sh: a one-node test cluster (accounting=$ACCOUNTING, JobRequeue=$JOB_REQUEUE)
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it starts again (default 120): short on a test cluster
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=$storage
AccountingStorageHost=localhost
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=$JOB_REQUEUE
MinJobAge=300
KillWait=10
SchedulerParameters=sched_interval=2
MessageTimeout=20
SlurmdTimeout=30
InactiveLimit=0
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -f $CONF ]] && cmp -s "$CONF" "$CONF.new"; then rm "$CONF.new"; return 1; fi
  mv "$CONF.new" "$CONF"
  return 0
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for ((i = 0; i < limit * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm_cluster: $what did not come up in ${limit} s; see $LOGS" >&2
  return 1
}

start_munge() {
  alive munged && return
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [[ -f /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  runuser -u munge -- munged
  wait_for 10 munged test -S /run/munge/munge.socket.2
  wait_for 10 "munged's pid file" test -s /run/munge/munged.pid
  cp /run/munge/munged.pid "$RUN/munged.pid"
}

start_mariadb() {
  alive mariadbd && return
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/atml-mariadbd.pid \
    --bind-address=127.0.0.1 --innodb-buffer-pool-size=64M >>"$LOGS/mariadb.log" 2>&1 &
  wait_for 60 MariaDB mariadb -e "select 1"
  cp /run/mysqld/atml-mariadbd.pid "$RUN/mariadbd.pid"  # mysql may not write $RUN
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  alive slurmdbd && return
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
}

stop_daemon() {  # stop_daemon NAME: SIGTERM, then SIGKILL after 10 s
  alive "$1" || { rm -f "$RUN/$1.pid"; return 0; }
  local pid
  pid=$(cat "$RUN/$1.pid")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid"
}

node_ready() { sinfo -h -N -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

start() {
  install_packages
  local changed=0
  write_conf && changed=1
  start_munge
  if [[ $ACCOUNTING == slurmdbd ]]; then start_mariadb; start_slurmdbd; fi
  if ((changed)) && alive slurmctld; then stop_daemon slurmctld; fi
  if ! alive slurmctld; then
    slurmctld
    wait_for 60 slurmctld scontrol ping
  fi
  if ! alive slurmd; then slurmd -N localhost; fi
  wait_for 60 "the node (sinfo)" node_ready
  echo "slurm_cluster: up (accounting=$ACCOUNTING, JobRequeue=$JOB_REQUEUE): $(sinfo -h -N -o '%N %T %c CPUs')"
}

stop() {
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$daemon"; done
  echo "slurm_cluster: stopped"
}

case $ACTION in
  start) start ;;
  stop) stop ;;
  status) node_ready ;;
  *) echo "slurm_cluster.sh: unknown action $ACTION (start, stop, status)" >&2; exit 2 ;;
esac
