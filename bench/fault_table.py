"""Run the fault and bad-input scenarios of issue #7 and print one table row per scenario: outcome and seconds.

    .venv/bin/python bench/fault_table.py            # all three files (~10 min on a busy 2-core machine)
    .venv/bin/python bench/fault_table.py -k outage  # any pytest selection

The scenarios are the tests themselves (tests/test_faults.py, tests/test_cluster.py, tests/test_bad_input.py);
this script only runs them through pytest's JUnit XML report and turns that into the table for a resolution report.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_faults.py", "tests/test_cluster.py", "tests/test_bad_input.py"]


def main(extra: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                                *FILES, *extra], cwd=REPO)
        cases = ET.parse(report).getroot().iter("testcase")
        rows = []
        for case in cases:
            failed = case.find("failure") is not None or case.find("error") is not None
            skipped = case.find("skipped") is not None
            outcome = "FAILED" if failed else "skipped" if skipped else "passed"
            rows.append((case.get("classname", "").rsplit(".", 1)[-1], case.get("name", ""), outcome,
                         float(case.get("time", 0))))
    width = max((len(f"{m}::{n}") for m, n, _, _ in rows), default=10)
    print(f"\n{'scenario'.ljust(width)}  outcome  seconds")
    for module, name, outcome, seconds in rows:
        print(f"{f'{module}::{name}'.ljust(width)}  {outcome.ljust(7)}  {seconds:7.1f}")
    print(f"{'total'.ljust(width)}           {sum(r[3] for r in rows):7.1f}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
