"""What a researcher sees in MLflow's UI (issue #16): a real sweep, a real ``mlflow server`` on 127.0.0.1 and a real
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium), with a screenshot per page.

Without a browser these tests skip, saying how to install one; CI sets ``IMBGAN_REQUIRE_BROWSER=1`` (``.ci/run``
installs it), where a missing browser fails instead. ``IMBGAN_SCREENSHOTS=DIR`` keeps the screenshots.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers_sweep import MlflowServer, private_workdir, read_json, run_sweep_ok, write_space
from trainables.mlflow_logging import ui_link

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SWEEP = "ui"


def _browser_or_skip():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e .[test])")
    if missing:
        message = (f"no browser for the UI tests: missing {', '.join(missing)}; install it with "
                   f"`apt-get install chromium chromium-driver`")
        if os.environ.get("IMBGAN_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(cache_dir, tmp_path_factory):
    """A finished 3-trial sweep (ASHA stops some) and an ``mlflow server`` on 127.0.0.1 over its store."""
    _browser_or_skip()
    root = tmp_path_factory.mktemp("ui_sweep")
    space = write_space(root / "space.yaml", name=SWEEP,
                        search={"num_samples": 3, "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 3}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": "auto", "max_concurrent": 1})
    results = root / "results"
    sweep = run_sweep_ok(space, results, cache_dir)
    with private_workdir(cache_dir, "imbu") as (_, env):
        server = MlflowServer(env, results).start()
        try:
            yield {**sweep, "summary": read_json(results / SWEEP / "summary.json"), "server": server}
        finally:
            server.stop()


def page_text(driver, url: str, needle: str, timeout: float = 60.0) -> str:
    """Open ``url`` and wait until the page's text contains ``needle``; the text."""
    driver.get(url)
    return wait_for_text(driver, needle, timeout)


def wait_for_text(driver, needle: str, timeout: float = 60.0) -> str:
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} never appeared on {driver.current_url}; the page read:\n{text[:2000]}")


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    keep = os.environ.get("IMBGAN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def trial_names(served) -> dict[str, str]:
    return {t["trial_id"]: f"{t['trial_id']} {t['state']} · {SWEEP}" for t in served["summary"]["trials"]}


def test_the_printed_link_opens_the_runs_table_with_trial_states_in_the_names(served, browser, tmp_path):
    """MLflow 3.17 opened the experiment in its GenAI view ("Traces 0"); trial names were cut to the sweep's name."""
    printed = re.search(r"MLflow UI: .*open (\S+)", served["out"])
    assert printed, served["out"][-2000:]
    url = printed.group(1).replace("http://127.0.0.1:5000", served["server"].uri)
    text = page_text(browser, url, "Run Name")
    assert "No data available for the selected time range" not in text  # the GenAI overview
    assert SWEEP in text
    browser.find_element("xpath", "//div[@col-id='attributes.`Run Name`']//button").click()  # expand the sweep run
    for name in trial_names(served).values():
        text = wait_for_text(browser, name)
    assert "completed" in text and "stopped_by_asha" in text, text  # the two kinds of end differ at a glance
    screenshot(browser, "runs_table.png", tmp_path)


def test_the_sweep_run_page_shows_best_trial_metrics_and_searched_distributions(served, browser, tmp_path):
    summary = served["summary"]
    mlflow, best = summary["mlflow"], summary["best"]
    url = ui_link(served["server"].uri, mlflow["experiment_id"], mlflow["parent_run_id"])
    text = page_text(browser, url, "best_intra_fid")
    assert "trials_completed" in text and "total_steps" in text
    assert f"{best['metrics']['intra_fid']:.4f}"[:6] in text  # the best trial's value, as MLflow prints it
    screenshot(browser, "sweep_run.png", tmp_path)
    browser.get(url.replace("?", "/artifacts?"))
    for folder_or_file in ("sweep", "plots", "anytime.png"):  # the sweep's files, down to a plot's preview
        wait_for_text(browser, folder_or_file)
        browser.find_element("xpath", f"//*[normalize-space(text())='{folder_or_file}']").click()
    wait_for_text(browser, "summary.json")
    time.sleep(2)  # the preview image loads
    screenshot(browser, "sweep_run_artifacts.png", tmp_path)


def test_the_compare_view_tells_completed_from_stopped_trials(served, browser, tmp_path):
    from mlflow.tracking import MlflowClient

    summary = served["summary"]
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    runs = [r for r in client.search_runs([summary["mlflow"]["experiment_id"]])
            if "mlflow.parentRunId" in r.data.tags]
    query = urllib.parse.urlencode({"runs": json.dumps([r.info.run_id for r in runs]),
                                    "experiments": json.dumps([summary["mlflow"]["experiment_id"]]),
                                    "workflowType": "machine_learning"})
    text = page_text(browser, f"{served['server'].uri}/#/compare-runs?{query}", "Run Name")
    assert f"Comparing {len(runs)} Runs" in text
    for name in trial_names(served).values():
        assert name in text.replace("\n", " "), (name, text[:1500])
    screenshot(browser, "compare.png", tmp_path)
