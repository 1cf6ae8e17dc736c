"""Run the fault and bad-input scenarios (issues #7, #12); print one row per scenario: held or broke, what was lost.

    .venv/bin/python bench/fault_table.py            # all three files (~10 min on a busy 2-core machine)
    .venv/bin/python bench/fault_table.py -k outage  # any pytest selection
    .venv/bin/python bench/fault_table.py --junit report.xml  # the table from an earlier run's JUnit XML

The scenarios are the tests themselves (the files in FILES); this script only runs them through pytest's JUnit XML
report and turns that into the table for a resolution report. "lost" is "nothing" for a scenario that held, else
the first line of what the test found broken.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_faults.py", "tests/test_interrupt.py", "tests/test_restore_at_budget.py",
         "tests/test_mlflow_outage.py", "tests/test_cluster.py", "tests/test_bad_input.py"]


def main(extra: list[str]) -> int:
    if extra[:1] == ["--junit"]:
        modules = {Path(f).stem for f in FILES}
        return print_table([c for c in ET.parse(extra[1]).getroot().iter("testcase")
                            if c.get("classname", "").rsplit(".", 1)[-1] in modules], 0)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        files = [f for f in FILES if (REPO / f).exists()]
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                                *files, *extra], cwd=REPO)
        return print_table(list(ET.parse(report).getroot().iter("testcase")), code)


def print_table(cases: list, code: int) -> int:
    """One row per test case: scenario, held / broke / skipped, seconds, what was lost."""
    rows = []
    for case in cases:
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped") is not None
        outcome = "broke" if problem is not None else "skipped" if skipped else "held"
        lost = "nothing" if outcome == "held" else _first_line(problem if problem is not None else case.find("skipped"))
        rows.append((f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name', '')}", outcome, lost,
                     float(case.get("time", 0))))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\n{'scenario'.ljust(width)}  outcome  seconds  lost")
    for scenario, outcome, lost, seconds in rows:
        print(f"{scenario.ljust(width)}  {outcome.ljust(7)}  {seconds:7.1f}  {lost}")
    print(f"{'total'.ljust(width)}           {sum(r[3] for r in rows):7.1f}")
    return code


def _first_line(element) -> str:
    text = (element.get("message") or element.text or "").strip()
    return (text.splitlines() or ["?"])[0][:120]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
