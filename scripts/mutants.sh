#!/usr/bin/env bash
# Mutation check of the safety-critical modules (make mutants): mutmut changes one line at a
# time and runs the tests that cover that module; a mutant that survives is a change to a
# safety line that no test notices. Runs on a scratch copy of the tree (uncommitted changes
# included): the working tree is never modified. Prints the score and every survivor's diff.
#
#   scripts/mutants.sh                      every module (scripts/mutmut_config.py TARGETS)
#   MUTANT_MODULES=sync_gate scripts/mutants.sh
#   BIN=/path/to/venv/bin scripts/mutants.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$root/.venv/bin}"
bin="$(cd "$bin" && pwd)"
[[ -x "$bin/mutmut" ]] || { echo "mutants: $bin/mutmut missing (pip install 'mutmut<3')" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/exdr-mutants.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$root"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$work"
cp scripts/mutmut_config.py "$work/mutmut_config.py"
cd "$work"

export MUTANT_PYTHON="$bin/python" PYTHONPATH="$work" PYTHONDONTWRITEBYTECODE=1
paths="$("$bin/python" -c 'import mutmut_config as m; print(",".join(t.path for t in m.selected()))')"
runner="$("$bin/python" -c '
import mutmut_config as m
print(m.pytest_command(sorted({t for x in m.selected() for t in m._existing(x.tests)})))')"
echo "mutating: $paths"
echo "baseline: $runner"

set +e
"$bin/mutmut" run --paths-to-mutate "$paths" --tests-dir tests --no-progress --simple-output \
  --runner "$runner" >"$work/run.log" 2>&1
run_status=$?
set -e
tail -n 5 "$work/run.log"

"$bin/python" - "$bin/mutmut" <<'PY'
import sqlite3, subprocess, sys
mutmut = sys.argv[1]
db = sqlite3.connect(".mutmut-cache")
rows = db.execute(
    "SELECT m.id, sf.filename, l.line_number, m.status FROM Mutant m "
    "JOIN Line l ON m.line = l.id JOIN SourceFile sf ON l.sourcefile = sf.id ORDER BY m.id"
).fetchall()
tested = [r for r in rows if r[3] not in ("skipped", "untested")]
by_file = {}
for _id, filename, _line, status in tested:
    counts = by_file.setdefault(filename, {})
    counts[status] = counts.get(status, 0) + 1
total_killed = 0
for filename, counts in sorted(by_file.items()):
    killed = counts.get("ok_killed", 0) + counts.get("ok_suspicious", 0)
    total_killed += killed
    n = sum(counts.values())
    print(f"{filename}: {killed}/{n} killed ({100 * killed / n:.0f}%) {counts}")
n = len(tested)
if n:
    print(f"score: {total_killed}/{n} killed ({100 * total_killed / n:.1f}%)")
survivors = [r for r in tested if r[3] in ("bad_survived", "bad_timeout")]
print(f"survivors: {len(survivors)}")
for mutant_id, filename, line, status in survivors:
    diff = subprocess.run([mutmut, "show", str(mutant_id)], capture_output=True, text=True).stdout
    body = [l for l in diff.splitlines() if l.startswith(("-", "+")) and not l.startswith(("---", "+++"))]
    print(f"  #{mutant_id} {filename}:{line + 1} {status}: " + " | ".join(body))
PY
# mutmut's own exit code: 0 every mutant killed, bit 2 survivors, bit 4 timeouts
exit "$run_status"
