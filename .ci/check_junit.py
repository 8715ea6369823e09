"""Fail CI when the test run executed nothing, or skipped anything."""

import sys
import xml.etree.ElementTree as ElementTree

root = ElementTree.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
totals = {
    key: sum(int(suite.get(key, 0)) for suite in suites)
    for key in ("tests", "failures", "errors", "skipped")
}
print("junit: " + ", ".join(f"{key} {value}" for key, value in totals.items()))
if totals["tests"] == 0:
    sys.exit("no test ran")
if totals["skipped"]:
    sys.exit(f"{totals['skipped']} tests were skipped: every test must run")
if totals["failures"] or totals["errors"]:
    sys.exit("tests failed")
