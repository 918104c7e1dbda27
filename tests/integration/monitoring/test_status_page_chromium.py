"""The status page in Debian's headless Chromium through selenium and chromium-driver: it loads on its own
(no console errors), its tables are the state database's numbers, its charts draw the history, its links
lead to the worker logs. The scenario behind it: tests/support/monitoring.py.
"""

from __future__ import annotations

import shutil

import pytest

from harvester_cli.state import views
from tests.support.harness import wait_until
from tests.support.monitoring import need


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    need("chromium", "chromium")
    driver_path = need("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path, log_output=str(tmp_path_factory.getbasetemp()
                                                                              / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(site, serve_logs, browser, tmp_path_factory):
    browser.get(f"{serve_logs}/status")
    screenshot = tmp_path_factory.getbasetemp() / "status-page.png"
    browser.save_screenshot(str(screenshot))
    return browser, screenshot


@pytest.mark.browser
def test_status_page_loads_self_contained_without_console_errors(page):
    from selenium.webdriver.common.by import By

    driver, screenshot = page
    assert screenshot.stat().st_size > 10_000
    assert driver.find_element(By.ID, "harvester-id").text.startswith("mon-")
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []
    # nothing was loaded beside the page itself: no script, font, stylesheet or image from anywhere
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert driver.find_elements(By.TAG_NAME, "script") == []


@pytest.mark.browser
def test_status_page_tables_match_the_state_database(site, page):
    from selenium.webdriver.common.by import By

    driver, _ = page
    store = site.instance().store
    for row in views.worker_counts(store, list(site.config.queues)):
        cell = driver.find_element(By.CSS_SELECTOR, f'#workers td[data-queue="{row["queue"]}"][data-ce='
                                                    f'"{row["computing_element"]}"][data-state="{row["state"]}"]')
        assert int(cell.text) == row["count"], row
    pending = views.pending_report_ages(store)
    for kind in ("job", "worker"):
        cell = driver.find_element(By.CSS_SELECTOR, f'#pending td[data-pending="{kind}"]')
        assert int(cell.text) == pending.get(kind, {"count": 0})["count"]
    runs = {r["command"]: r["last_exit"] for r in views.command_runs(store)}
    for command, code in runs.items():
        assert int(driver.find_element(By.CSS_SELECTOR, f'#runs td[data-exit="{command}"]').text) == code
    # the pilots that exited 3 are the most frequent error, counted as the database has them
    assert int(driver.find_element(By.CSS_SELECTOR, '#errors td[data-count="1060"]').text) == 2
    assert int(driver.find_element(By.CSS_SELECTOR, '#errors td[data-count="1041"]').text) == 2


@pytest.mark.browser
def test_status_page_charts_render_the_history(site, page):
    from selenium.webdriver.common.by import By

    driver, _ = page
    charts = {svg.get_attribute("data-queue"): svg for svg in driver.find_elements(By.CSS_SELECTOR, "svg[data-queue]")}
    assert set(charts) == set(site.config.queues)
    good = charts["GOOD"]
    assert good.size["width"] > 300 and good.size["height"] > 100   # laid out and drawn, not collapsed
    lines = {p.get_attribute("data-state"): p for p in good.find_elements(By.CSS_SELECTOR, "polyline.series")}
    assert {"running", "submitted", "finished"} <= set(lines)
    running = lines["running"]
    assert len(running.get_attribute("points").split()) >= 100   # a day of snapshots, bucketed
    box = driver.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height];", running)
    assert box[0] > 200 and box[1] > 10


@pytest.mark.browser
def test_status_page_links_lead_to_the_worker_logs(site, serve_logs, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{serve_logs}/status")
    link = browser.find_element(By.CSS_SELECTOR, '#errors td[data-code="1060"] ~ td a')
    worker_id = link.text
    link.click()
    wait_until(lambda: "Index of" in browser.title, what="the worker's log directory")
    assert worker_id in browser.current_url and "pilot.out" in browser.page_source
    browser.find_element(By.LINK_TEXT, "pilot.out").click()
    wait_until(lambda: "pilot fails" in browser.page_source, what="the pilot's output")
