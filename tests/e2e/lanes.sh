#!/usr/bin/env bash
# `make e2e`: the end-to-end tests in three lanes at once, each on VMs of its own, so that both
# Debian releases and the user's own app fit in CI's time:
#   A  every single-VM test of the sample app on E2E_RELEASE (Debian 13), both app servers
#   B  the lab of three VMs on E2E_RELEASE, then the every_release tests on E2E_OTHER_RELEASE
#   C  the user's own app (test_own_app.py) on a fresh VM of E2E_RELEASE per app server, then
#      tls_mode acme against Pebble (test_acme.py, minutes of waiting for renewals) on another,
#      then a bare E2E_RELEASE given the host packages (test_fresh_host.py; lane B: the other's)
# Lanes B and C run niced, their VMs included: lane A's load tests keep the latency they are
# judged by. Lane A prints as it goes, B and C once all are done; exit 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
pytest=("${VENV:-.venv}/bin/pytest" -v -rs --durations=10)
logs=${E2E_LOG_DIR:-/tmp/e2e-logs}
mkdir -p "$logs"

lane_b() {
  local rc=0
  LOCALVM_RELEASE=$E2E_RELEASE LOCALVM_LAB=$E2E_LAB LOCALVM_LAB_SUBNET=$E2E_LAB_SUBNET \
    E2E_LOG_DIR=$logs/$E2E_RELEASE-lab "${pytest[@]}" tests/e2e/test_scale_out.py || rc=1
  LOCALVM_RELEASE=$E2E_OTHER_RELEASE LOCALVM_NAME=$E2E_OTHER_VM_NAME \
    LOCALVM_SUBNET=$E2E_OTHER_VM_SUBNET E2E_LOG_DIR=$logs/$E2E_OTHER_RELEASE \
    "${pytest[@]}" -m every_release tests/e2e || rc=1
  return $rc
}

lane_c() {
  local rc=0
  LOCALVM_RELEASE=$E2E_RELEASE LOCALVM_NAME=$E2E_APP_VM_NAME LOCALVM_SUBNET=$E2E_APP_VM_SUBNET \
    E2E_LOG_DIR=$logs/$E2E_RELEASE-own-app "${pytest[@]}" tests/e2e/test_own_app.py || rc=1
  LOCALVM_RELEASE=$E2E_RELEASE LOCALVM_NAME=$E2E_APP_VM_NAME LOCALVM_SUBNET=$E2E_APP_VM_SUBNET \
    E2E_LOG_DIR=$logs/$E2E_RELEASE-acme "${pytest[@]}" tests/e2e/test_acme.py || rc=1
  LOCALVM_RELEASE=$E2E_RELEASE "${pytest[@]}" tests/e2e/test_fresh_host.py || rc=1
  return $rc
}

echo "==> e2e lanes B (lab on $E2E_RELEASE, then $E2E_OTHER_RELEASE) and C (own app, then acme) run beside," \
  "in $logs/lane-b.log and lane-c.log"
(renice -n 10 -p $BASHPID >/dev/null && lane_b) > "$logs/lane-b.log" 2>&1 &
b=$!
(renice -n 10 -p $BASHPID >/dev/null && lane_c) > "$logs/lane-c.log" 2>&1 &
c=$!
echo "==> e2e lane A: every single-VM test of the sample app on $E2E_RELEASE"
LOCALVM_RELEASE=$E2E_RELEASE LOCALVM_NAME=$E2E_VM_NAME LOCALVM_SUBNET=$E2E_VM_SUBNET \
  E2E_LOG_DIR=$logs/$E2E_RELEASE "${pytest[@]}" tests/e2e --ignore tests/e2e/test_scale_out.py \
  --ignore tests/e2e/test_own_app.py --ignore tests/e2e/test_acme.py \
  --ignore tests/e2e/test_fresh_host.py
a=$?
wait $b
b=$?
wait $c
c=$?
echo "==> e2e lane B (lab on $E2E_RELEASE, then $E2E_OTHER_RELEASE)"
cat "$logs/lane-b.log"
echo "==> e2e lane C (the user's own app, then tls_mode acme, on $E2E_RELEASE)"
cat "$logs/lane-c.log"
echo "==> e2e: lane A exited $a, lane B $b, lane C $c"
[ $a -eq 0 ] && [ $b -eq 0 ] && [ $c -eq 0 ]
