"""The web chat in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): send a message,
see the streamed reply, rate it, ask for another answer and pick one; the feedback rows are in SQLite."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if shutil.which("chromium") is None or not shutil.which(CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh dev installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_chat_rate_and_pick(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(live_server.url + "/")
    wait.until(lambda d: d.find_element(By.ID, "model").text not in ("", "…"))
    browser.find_element(By.ID, "system").send_keys("be nice")
    browser.find_element(By.ID, "max_tokens").clear()
    browser.find_element(By.ID, "max_tokens").send_keys("12")
    browser.find_element(By.ID, "input").send_keys("hello there, how are you doing today?")
    browser.find_element(By.ID, "send").click()
    reply = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant[data-done='1']")))
    first_id = reply.get_attribute("data-id")
    assert first_id.startswith("chatcmpl-")
    assert live_server.state.writer.flush(10)
    with sqlite3.connect(live_server.db) as db:
        stored = db.execute("SELECT completion, messages FROM responses WHERE id = ?", (first_id,)).fetchone()
    # the browser shows runs of whitespace (a random model's form feeds too) as one space
    assert reply.find_element(By.CSS_SELECTOR, ".text").text.split() == stored[0].split()
    assert '"be nice"' in stored[1]  # the system box reached the model
    reply.find_element(By.CSS_SELECTOR, "button.up").click()
    wait.until(lambda d: reply.get_attribute("data-rated") == "1")
    reply.find_element(By.CSS_SELECTOR, "button.another").click()
    pair = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".pair[data-done='1']")))
    sides = pair.find_elements(By.CSS_SELECTOR, ".msg")
    ids = [s.get_attribute("data-id") for s in sides]
    sides[1].find_element(By.CSS_SELECTOR, "button.pick").click()
    wait.until(lambda d: reply.get_attribute("data-picked") == ids[1])
    with sqlite3.connect(live_server.db) as db:
        rating = db.execute("SELECT rating FROM feedback WHERE kind = 'rating' AND response_id = ?",
                            (first_id,)).fetchall()
        pairwise = db.execute("SELECT response_id, rejected_id FROM feedback WHERE kind = 'pairwise' AND "
                              "response_id = ?", (ids[1],)).fetchall()
    assert rating == [(1,)] and pairwise == [(ids[1], ids[0])]
    browser.get(live_server.url + "/monitor")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")
    assert "pairwise" in browser.find_element(By.ID, "feedback").text
