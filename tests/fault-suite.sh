#!/usr/bin/env bash
# The fault suite in one command (README: "What dtx guarantees, and how it
# is tested"). It needs what `cargo test` needs (redis-server on PATH).
#
#   tests/fault-suite.sh                the short form, about a minute
#                                       (CI runs the same tests within
#                                       `cargo test --workspace`)
#   tests/fault-suite.sh --long [SECS]  the mixed loads under faults for SECS
#                                       seconds each (default 600)
#   tests/fault-suite.sh --everysec [SECS]
#                                       measures what Redis crashes under
#                                       appendfsync everysec lose (prints it);
#                                       a crash every 10 s (default 60)
#   tests/fault-suite.sh --self-check   builds dtx with deliberate defects
#                                       (cargo feature self-check) and runs
#                                       the short form once per defect: each
#                                       run must fail; prints what caught it
set -euo pipefail
cd "$(dirname "$0")/.."

# the fault tests: the mixed loads (faults), faulty links to Redis and to
# the branches (links), replica kills and pauses (replicas), Redis killed
# under load (durability)
SUITE=(faults:: links:: replicas:: durability::every_acknowledged)
DEFECTS=(record-skip-epoch record-drop-due error-is-failure)

case "${1:-}" in
"")
  exec cargo test --test it -- "${SUITE[@]}"
  ;;
--long)
  export DTX_FAULT_SECS="${2:-600}"
  exec cargo test --test it -- faults:: --nocapture
  ;;
--everysec)
  export DTX_FAULT_SECS="${2:-60}"
  exec cargo test --test it -- faults::loss_under --ignored --nocapture
  ;;
--self-check)
  log=$(mktemp -d)
  trap 'rm -rf "$log"' EXIT
  cargo test --features self-check --test it --no-run
  # the same build with no defect switched on must pass
  if ! env -u FAILPOINTS cargo test --features self-check --test it -- "${SUITE[@]}" \
    >"$log/none" 2>&1; then
    tail -40 "$log/none"
    echo "self-check: the suite fails with no defect switched on" >&2
    exit 1
  fi
  echo "self-check: no defect: the suite passes"
  missed=0
  for defect in "${DEFECTS[@]}"; do
    if FAILPOINTS="$defect=return" cargo test --features self-check --test it -- "${SUITE[@]}" \
      >"$log/$defect" 2>&1; then
      echo "self-check: $defect: the suite PASSED, it caught nothing" >&2
      missed=1
      continue
    fi
    # a run that failed without a failing test (a build error, say)
    # caught nothing
    if ! grep -qE "^test .* FAILED$" "$log/$defect"; then
      tail -20 "$log/$defect"
      echo "self-check: $defect: the run failed, but no test did" >&2
      missed=1
      continue
    fi
    echo "self-check: $defect: the suite failed; caught by:"
    grep -E "^test .* FAILED$" "$log/$defect" | sed 's/^test /  /; s/ \.\.\. FAILED$//'
    # the first line of each assertion that fired
    { grep -A1 -E "^thread '.*' .*panicked at" "$log/$defect" || true; } |
      { grep -vE "^(thread|--)" || true; } | sort | uniq -c | sort -rn | head -8 | sed 's/^/   /'
  done
  exit "$missed"
  ;;
*)
  sed -n '2,17p' "$0" >&2
  exit 2
  ;;
esac
