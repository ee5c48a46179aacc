#!/bin/bash
# Runs every unit test (ctest) and every integration test (pytest under
# Debian's /usr/bin/python3) against an already built tree, then prints one
# summary line "N passed, M failed". Exit status 0 only when nothing failed
# and at least one test ran.
#   scripts/run-tests.sh [BUILD_DIR]
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
logdir=$build/test-logs
mkdir -p "$logdir"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# python-requests ignores a session's CA when this is set (see DESIGN notes).
unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE

echo "== unit tests (ctest)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" \
	--output-junit "$logdir/ctest.xml" 2>&1 | tee "$logdir/ctest.log"
ctest_rc=${PIPESTATUS[0]}

echo "== integration tests (pytest)"
KV_BUILD_DIR=$build KV_SOURCE_DIR=$root \
/usr/bin/python3 -m pytest -q -p no:cacheprovider \
	--junitxml="$logdir/pytest.xml" "$root/tests/integration" 2>&1 |
	tee "$logdir/pytest.log"
pytest_rc=${PIPESTATUS[0]}

# Count from the JUnit reports, which both runners write.
read -r passed failed skipped < <(/usr/bin/python3 - "$logdir/ctest.xml" "$logdir/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
p = f = s = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except Exception:
        f += 1  # a runner that wrote no report counts as a failure
        continue
    for tc in root.iter("testcase"):
        st = tc.get("status")
        if tc.find("failure") is not None or tc.find("error") is not None or st == "fail":
            f += 1
        elif tc.find("skipped") is not None or st in ("notrun", "disabled"):
            s += 1
        else:
            p += 1
print(p, f, s)
PY
)

rc=0
if [ "$ctest_rc" -ne 0 ] || [ "$pytest_rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
	rc=1
	[ "$failed" -eq 0 ] && failed=1   # a runner failed without a failing case
fi
echo
if [ "$skipped" -ne 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
exit $rc
