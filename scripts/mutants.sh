#!/usr/bin/env bash
# Mutation check of the safety-critical modules (make mutants): mutmut changes one line at a
# time and runs the tests that cover that module; a mutant that survives is a change to a
# safety line that no test notices. Prints each module's score, its run time and every
# survivor's diff.
#
# Each module runs on its own copy of the tree (uncommitted changes included) under
# var/mutants/<module>: the working tree is never modified, and the copy keeps mutmut's cache,
# so an interrupted run resumes where it stopped, and a run after tests were added tries only
# the mutants that were not killed before (mutmut keeps a killed mutant killed; any other
# result is tried again once the tests changed).
#
#   scripts/mutants.sh                      every module (scripts/mutmut_config.py TARGETS)
#   MUTANT_MODULES=sync_gate scripts/mutants.sh
#   MUTANT_FRESH=1 scripts/mutants.sh       forget the cached results first
#   MUTANT_MODULES=controller MUTANT_LINES=1-300 scripts/mutants.sh   a part of one module
#                                           (its own copy; other lines count as skipped)
#   BIN=/path/to/venv/bin MUTANT_WORK=/tmp/m scripts/mutants.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/.venv/bin}"
bin="$(cd "$bin" && pwd)"
[[ -x "$bin/mutmut" ]] || { echo "mutants: $bin/mutmut missing (pip install 'mutmut<3')" >&2; exit 2; }
work_root="${MUTANT_WORK:-$root/var/mutants}"

cd "$root"
modules="$(PYTHONPATH="$root/scripts" MUTANT_PYTHON="$bin/python" "$bin/python" -c '
import mutmut_config as m
print(" ".join(m.selected_names()))')"

status=0
for module in $modules; do
  work="$work_root/$module${MUTANT_LINES:+.lines-$MUTANT_LINES}"
  mkdir -p "$work"
  if [[ "${MUTANT_FRESH:-0}" == 1 ]]; then
    rm -f "$work/.mutmut-cache"
  fi
  # a fresh copy of the sources; only mutmut's cache (and its run log) outlive it
  find "$work" -mindepth 1 -maxdepth 1 ! -name .mutmut-cache ! -name run.log -exec rm -rf {} +
  (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$work"
  cp scripts/mutmut_config.py "$work/mutmut_config.py"

  (
    cd "$work"
    export MUTANT_PYTHON="$bin/python" PYTHONPATH="$work" PYTHONDONTWRITEBYTECODE=1
    export MUTANT_MODULES="$module"
    path="$("$bin/python" -c 'import mutmut_config as m; print(m.selected()[0].path)')"
    runner="$("$bin/python" -c 'import mutmut_config as m; print(m.test_command(m.selected()[0]))')"
    # mutmut 2 parses with parso, which does not know every construct of Python 3.11
    "$bin/python" -c 'import mutmut_config as m; m.prepare_copy()'
    echo "== $module: mutating $path" >&2
    echo "baseline: $runner" >&2
    started=$(date +%s)
    set +e
    "$bin/mutmut" run --paths-to-mutate "$path" --tests-dir tests --no-progress --simple-output \
      --runner "$runner" >"$work/run.log" 2>&1
    run_status=$?
    set -e
    elapsed=$(($(date +%s) - started))
    tail -n 3 "$work/run.log" >&2
    if (( run_status & 1 )); then
      echo "$module: mutmut failed (status $run_status): $work/run.log" >&2
    fi
    "$bin/python" - "$bin/mutmut" "$module" "$path" "$elapsed" <<'PY'
import sqlite3, subprocess, sys

mutmut, module, path, elapsed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = sqlite3.connect(".mutmut-cache")
rows = db.execute(
    "SELECT m.id, sf.filename, l.line_number, m.status FROM Mutant m "
    "JOIN Line l ON m.line = l.id JOIN SourceFile sf ON l.sourcefile = sf.id "
    "WHERE sf.filename = ? ORDER BY m.id",
    (path,),
).fetchall()
counts: dict[str, int] = {}
for row in rows:
    counts[row[3]] = counts.get(row[3], 0) + 1
tested = [r for r in rows if r[3] not in ("skipped", "untested")]
killed = counts.get("ok_killed", 0) + counts.get("ok_suspicious", 0)
n = len(tested)
share = f"{100 * killed / n:.1f}%" if n else "-"
untested = counts.get("untested", 0)
state = "complete" if untested == 0 else f"INCOMPLETE: {untested} mutants not tried yet"
print(f"{module} ({path}): {killed}/{n} killed ({share}) in {elapsed}s; {state}; {counts}")
survivors = [r for r in tested if r[3] in ("bad_survived", "bad_timeout")]
print(f"{module} survivors: {len(survivors)}")
for mutant_id, filename, line, status in survivors:
    diff = subprocess.run([mutmut, "show", str(mutant_id)], capture_output=True, text=True).stdout
    body = [
        x for x in diff.splitlines() if x.startswith(("-", "+")) and not x.startswith(("---", "+++"))
    ]
    print(f"  #{mutant_id} {filename}:{line + 1} {status}: " + " | ".join(body))
PY
    # mutmut's own exit code: 0 every mutant killed, bit 2 survivors, bit 4 timeouts
    exit "$run_status"
  ) || status=$((status | $?))
done
exit "$status"
