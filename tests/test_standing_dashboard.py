"""The dashboard in a real headless browser (Debian's chromium + chromium-driver, driven
by Selenium): it lists the running task, opens its detail page, shows the metrics plot
and the contributors per round, and the topology and catalog pages; the screenshot goes
to experiments/results/dashboard.png (used by the README)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.standing_util import ROOT, Parties, task_spec, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOT = ROOT / "experiments" / "results" / "dashboard.png"

pytestmark = pytest.mark.timeout(240)


def _browser():
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    if missing:
        msg = f"no {', '.join(missing)}: install Debian's chromium and chromium-driver (make setup does, as root)"
        print(msg)
        pytest.skip(msg)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("selenium is not installed (pip install -e '.[test]')")
        pytest.skip("selenium is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="rfl-chromium-")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1300",
    ):  # fmt: skip
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts), profile


def test_dashboard_shows_a_running_task(tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, profile = _browser()
    parties = Parties(tmp_path, ("a", "b", "c"), max_rounds={})
    try:
        nodes = {p: parties.start(p) for p in ("a", "b", "c")}
        spec = task_spec(["a", "b", "c"], pace=0.5)
        spec["config"]["train"]["rounds"] = 40  # paced: it runs while the browser looks
        tid = nodes["a"].create_task(spec)
        a = nodes["a"]
        driver.set_page_load_timeout(30)
        driver.get(f"{a.url}/#token={a.token}")
        # the page redraws itself every second: read it in one script call at a time
        wait = WebDriverWait(
            driver, 90, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )

        def js(script):
            return driver.execute_script(script)

        row = f'tr.task-row[data-id="{tid}"][data-status="running"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        driver.find_element(By.CSS_SELECTOR, row).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#task-detail[data-id="{tid}"]'))

        points = (  # of the accuracy line in the metrics plot
            "const l = document.querySelector('#metrics-plot polyline.series');"
            "return l ? l.getAttribute('points').trim().split(/ +/).length : 0;"
        )
        wait.until(lambda d: js(points) >= 3)
        cells = js(
            "return [...document.querySelectorAll('#contributors td.contributors')]"
            ".map(c => c.textContent);"
        )
        assert len(cells) >= 3 and set(cells) == {"a, b, c"}
        assert js("return document.querySelector('#task-detail .status').textContent") == "running"
        wait.until(
            lambda d: "round_start" in js("return document.getElementById('log').textContent")
        )
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOT))
        assert SHOT.stat().st_size > 10_000

        driver.get(f"{a.url}/#/topology")
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, 'tr.party[data-live="true"]')) == 3
        )
        driver.get(f"{a.url}/#/data")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.dataset")) == 3)
        assert "digits-test.csv" not in driver.page_source  # names and schemas, no paths
        # cancel from b: every node stops its peer and shows the task cancelled
        nodes["b"].cancel(tid, "enough for the screenshot")
        for node in nodes.values():
            d = node.wait(tid, timeout=60)
            assert d["status"] == "cancelled" and "cancelled by b" in d["reason"]
        wait_until(
            lambda: (
                all(n.task(tid)["local"]["1"]["status"] == "cancelled" for n in nodes.values())
                and nodes["a"].task(tid)["runs"][0]["status"] == "cancelled"
            ),
            60,
            "every peer to stop",
        )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        parties.stop_all()
