#!/usr/bin/env bash
# The test command: everything CI runs, in order, stopping at the first failure.
#
#   scripts/test.sh                        # all stages
#   STAGES="pytest lint" scripts/test.sh   # only these (any order given is kept)
#
# Stages:
#   pytest     tests/unit + tests/integration + tests/faults, every marker except `molecule`
#              (real PostgreSQL 15, SeaweedFS and moto started by scripts/testbed.py)
#   lint       ansible-lint --offline --profile production
#   sanity     ansible-test sanity --venv --python 3.11 (scripts/sanity.sh)
#   changelog  antsibull-changelog lint
#   molecule   scripts/molecule.sh (or `molecule test --all`) when scenarios exist
#
# Knobs: SETUP=0 skips scripts/setup.sh; PYTEST_ARGS="-k foo -x" adds pytest
# arguments; PYTEST_WORKERS=N runs pytest with xdist (each worker gets its own
# servers); SANITY_ARGS="--test pep8" narrows the sanity run.
# The stage_* functions are called by name (run_stage "$s" stage_$s).
# shellcheck disable=SC2317
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

all_stages="pytest lint sanity changelog molecule"
read -r -a stages <<<"${STAGES:-$all_stages}"
for s in "${stages[@]}"; do
  case " $all_stages " in *" $s "*) ;; *) echo "test.sh: unknown stage '$s' (known: $all_stages)" >&2; exit 2 ;; esac
done

export PATH="$root/.venv/bin:$PATH"
export LANG=${LANG:-C.UTF-8}
export AWS_EC2_METADATA_DISABLED=true   # never probe the metadata address from tests
export ANSIBLE_NOCOLOR=1 PY_COLORS=0 NO_COLOR=1
mkdir -p tests/output

timings=()
pytest_summary=""

header() {
  printf '\n==================== %s ====================\n' "$*"
}

finish() {
  local rc=$1
  header "summary"
  local t
  for t in "${timings[@]}"; do printf '  %s\n' "$t"; done
  [ -n "$pytest_summary" ] && printf '%s\n' "$pytest_summary"
  exit "$rc"
}

run_stage() {
  local name=$1
  shift
  header "stage: $name"
  local start=$SECONDS rc
  "$@"
  rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    timings+=("$(printf '%-10s ok      %4ds' "$name" "$took")")
  else
    timings+=("$(printf '%-10s FAILED  %4ds (exit %d)' "$name" "$took" "$rc")")
    echo "test.sh: stage '$name' failed (exit $rc)" >&2
    finish "$rc"
  fi
}

stage_setup() {
  bash scripts/setup.sh
}

pytest_counts() {
  # "pytest: N passed, N failed, N skipped" from the JUnit report
  python - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    sys.exit(0)
passed = failed = skipped = xfailed = 0
for case in root.iter("testcase"):
    outcome = {child.tag: child for child in case}
    if "failure" in outcome or "error" in outcome:
        failed += 1
    elif "skipped" in outcome:
        if outcome["skipped"].get("type") == "pytest.xfail":
            xfailed += 1
        else:
            skipped += 1
    else:
        passed += 1
if xfailed:
    print(f"pytest: {xfailed} xfailed (expected failures, each with its reason)")
print(f"pytest: {passed} passed, {failed} failed, {skipped} skipped")
PY
}

stage_pytest() {
  local paths=() d
  for d in tests/unit tests/integration tests/faults; do [ -d "$d" ] && paths+=("$d"); done
  local args=(-m "not molecule" --junitxml=tests/output/junit/pytest.xml --durations=15)
  [ -n "${PYTEST_WORKERS:-}" ] && args+=(-n "$PYTEST_WORKERS")
  local extra=()
  [ -n "${PYTEST_ARGS:-}" ] && read -r -a extra <<<"$PYTEST_ARGS"
  rm -f tests/output/junit/pytest.xml
  python -m pytest "${paths[@]}" "${args[@]}" "${extra[@]}"
  local rc=$?
  pytest_summary=$(pytest_counts tests/output/junit/pytest.xml)
  if [ "$rc" -eq 5 ]; then
    # there are always tests (tests/unit/test_engine_layout.py at least): none
    # collected means the selection or the collection is broken
    echo "test.sh: pytest collected no tests" >&2
  fi
  return "$rc"
}

stage_lint() {
  ANSIBLE_COLLECTIONS_PATH=$(scripts/collection-path.sh) ansible-lint --offline --profile production
}

stage_sanity() {
  local extra=()
  [ -n "${SANITY_ARGS:-}" ] && read -r -a extra <<<"$SANITY_ARGS"
  bash scripts/sanity.sh "${extra[@]}"
}

stage_changelog() {
  if [ ! -f changelogs/config.yaml ]; then
    echo "no changelogs/config.yaml: nothing to lint"
    return 0
  fi
  antsibull-changelog lint
}

stage_molecule() {
  local scenarios
  scenarios=$(find molecule roles -path '*/molecule/*/molecule.yml' -o -path 'molecule/*/molecule.yml' 2>/dev/null | sort -u)
  if [ -z "$scenarios" ]; then
    echo "no molecule scenarios (molecule/*/molecule.yml): nothing to run"
    return 0
  fi
  printf 'scenarios:\n%s\n' "$scenarios"
  if [ -f scripts/molecule.sh ]; then
    bash scripts/molecule.sh
  else
    ANSIBLE_COLLECTIONS_PATH=$(scripts/collection-path.sh) molecule test --all
  fi
}

if [ "${SETUP:-1}" != 0 ]; then
  run_stage setup stage_setup
fi
scripts/collection-path.sh >/dev/null
for s in "${stages[@]}"; do
  run_stage "$s" "stage_$s"
done
finish 0
