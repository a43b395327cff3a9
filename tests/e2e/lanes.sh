#!/usr/bin/env bash
# `make e2e`: the end-to-end tests in four lanes at once, each on VMs of its own, so that both
# Debian releases and the user's own app fit in CI's time:
#   A  every single-VM test of the sample app on E2E_RELEASE (Debian 13), both app servers,
#      except the redeploys
#   R  the redeploys (test_redeploy.py) on E2E_RELEASE, then the every_release tests on
#      E2E_OTHER_RELEASE (Debian 12)
#   B  the lab of three VMs on E2E_RELEASE
#   C  the user's own app (test_own_app.py) on a fresh VM of E2E_RELEASE per app server
# Lanes R and C run niced, their VMs included: lane A's load tests keep the latency they are
# judged by. Lane B does not: the lab's failover is judged by timing, and its distributed load
# test by counts that a starved worker VM reports too late for locust's master (which waits
# 0.5 s for the workers' last samples). Lane A prints as it goes, the others once all are done, then the share of the
# host's CPU the lanes kept busy; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
pytest=("${VENV:-.venv}/bin/pytest" -v -rs --durations=10)
logs=${E2E_LOG_DIR:-/tmp/e2e-logs}
mkdir -p "$logs"

# On VM $1 (subnet $2) of release $3, logs in $4: pytest with the rest of the arguments.
on_vm() {
  local name=$1 subnet=$2 release=$3 log_dir=$4
  shift 4
  LOCALVM_RELEASE=$release LOCALVM_NAME=$name LOCALVM_SUBNET=$subnet E2E_LOG_DIR=$log_dir \
    "${pytest[@]}" "$@"
}

lane_r() {
  local rc=0
  on_vm "$E2E_REDEPLOY_VM_NAME" "$E2E_REDEPLOY_VM_SUBNET" "$E2E_RELEASE" \
    "$logs/$E2E_RELEASE-redeploy" tests/e2e/test_redeploy.py || rc=1
  on_vm "$E2E_OTHER_VM_NAME" "$E2E_OTHER_VM_SUBNET" "$E2E_OTHER_RELEASE" \
    "$logs/$E2E_OTHER_RELEASE" -m every_release tests/e2e || rc=1
  return $rc
}

lane_b() {
  LOCALVM_RELEASE=$E2E_RELEASE LOCALVM_LAB=$E2E_LAB LOCALVM_LAB_SUBNET=$E2E_LAB_SUBNET \
    E2E_LOG_DIR=$logs/$E2E_RELEASE-lab "${pytest[@]}" tests/e2e/test_scale_out.py
}

lane_c() {
  on_vm "$E2E_APP_VM_NAME" "$E2E_APP_VM_SUBNET" "$E2E_RELEASE" "$logs/$E2E_RELEASE-own-app" \
    tests/e2e/test_own_app.py
}

# The host's busy and total CPU ticks (the first line of /proc/stat).
cpu_ticks() {
  local _ user nice system idle iowait rest
  read -r _ user nice system idle iowait rest < /proc/stat
  echo $((user + nice + system)) $((user + nice + system + idle + iowait))
}

# Niceness is what lets lane A keep its latency, but the kernel's autogroup gives each session
# (each VM, each service in a VM: systemd starts every one in a session of its own) an equal
# share whatever its nice value. Off for the run, so that nice values count; restored after.
autogroup=/proc/sys/kernel/sched_autogroup_enabled
autogroup_was=$(cat "$autogroup" 2>/dev/null)
if [ "$autogroup_was" = 1 ]; then
  if echo 0 2>/dev/null > "$autogroup"; then
    trap 'echo 1 > "$autogroup"' EXIT
    trap 'exit 1' INT TERM
  else
    echo "==> e2e: the kernel's autogroup is on and cannot be turned off here: lanes R, B and C" \
      "take as much CPU as lane A"
  fi
fi

read -r busy0 total0 < <(cpu_ticks)
started=$SECONDS
lanes=(r b c)
declare -A pid status niceness=([r]=10 [b]=0 [c]=10)
for lane in "${lanes[@]}"; do
  (renice -n "${niceness[$lane]}" -p $BASHPID >/dev/null && "lane_$lane") > "$logs/lane-$lane.log" 2>&1 &
  pid[$lane]=$!
done
echo "==> e2e lanes R (redeploys on $E2E_RELEASE, then $E2E_OTHER_RELEASE), B (lab) and C" \
  "(own app) run beside, in $logs/lane-{r,b,c}.log"
echo "==> e2e lane A: the single-VM tests of the sample app on $E2E_RELEASE"
on_vm "$E2E_VM_NAME" "$E2E_VM_SUBNET" "$E2E_RELEASE" "$logs/$E2E_RELEASE" tests/e2e \
  --ignore tests/e2e/test_redeploy.py --ignore tests/e2e/test_scale_out.py \
  --ignore tests/e2e/test_own_app.py
status[a]=$?
echo "==> e2e lane A ended after $(( (SECONDS - started) / 60 )) min"
for lane in "${lanes[@]}"; do
  wait "${pid[$lane]}"
  status[$lane]=$?
  echo "==> e2e lane ${lane^^}"
  cat "$logs/lane-$lane.log"
done
read -r busy1 total1 < <(cpu_ticks)
echo "==> e2e: $(( (SECONDS - started) / 60 )) min, the host's CPU $(( 100 * (busy1 - busy0) / (total1 - total0) ))% busy"
echo "==> e2e: lane A exited ${status[a]}, R ${status[r]}, B ${status[b]}, C ${status[c]}"
for lane in a "${lanes[@]}"; do
  [ "${status[$lane]}" -eq 0 ] || exit 1
done
