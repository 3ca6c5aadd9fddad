"""The web page in a real headless browser (Debian's chromium, driven by selenium through
chromium-driver) against a real node: log in through the link `lclient -web` prints, find a
job added with lclient in the list, watch its output arrive on its page while it runs, kill it
with the button, submit one with the form; any error in the browser's console (a JavaScript
error, a resource that failed to load, a refused script) fails the test."""

from __future__ import annotations

import re
import uuid

import pytest

from support.jobs import add, check, until
from support.processes import free_port
from support.web import chrome, console_errors, web_login

TAG = uuid.uuid4().hex[:5]
STEPS = "for i in $(seq 1 20); do echo line $i; sleep 1; done; sleep 300"  # a line a second, then quiet


@pytest.fixture
def node(cluster):
    return cluster.daemon(f"webui-{TAG}", extra=["--web-listen", f"127.0.0.1:{free_port()}"])


@pytest.fixture
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def text_of(driver, element_id: str) -> str:
    """The element's text; "" while the page has none (a job page reloads once when its job ends)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:
        # The reload replaced the element between find and read; chromedriver sometimes says so
        # as an inspector error ("Node with given id does not belong to the document").
        if "does not belong to the document" in str(exc):
            return ""
        raise


def test_log_in_watch_a_job_write_and_kill_it(node, browser):
    from selenium.webdriver.common.by import By

    job = add(node, STEPS)
    browser.get(web_login(node)["url"])
    assert browser.current_url == node.web_url + "/"  # the token left the address bar
    assert text_of(browser, "whoami") == "root (admin)"
    assert job in text_of(browser, "jobs") and node.name in text_of(browser, "nodes")

    browser.find_element(By.LINK_TEXT, job).click()
    browser.execute_script("window.stillThisPage = true")
    first = until(lambda: text_of(browser, "stdout"), "the first lines on the page")
    assert "line 20" not in first  # shown while the job writes it
    until(lambda: len(text_of(browser, "stdout")) > len(first), "later lines")
    assert text_of(browser, "stdout").startswith(first) and check(node, job)["state"] == "RUNNING"
    assert browser.execute_script("return window.stillThisPage") is True  # appended, not reloaded

    browser.find_element(By.ID, "kill").click()
    until(lambda: check(node, job)["state"] == "KILLED", "the kill button to kill the job")
    until(lambda: text_of(browser, "state").startswith("KILLED"), "the page to show the end")
    assert browser.find_elements(By.ID, "kill") == []
    assert console_errors(browser) == []


def test_submit_from_the_form_and_filter_the_list(node, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(web_login(node)["url"])
    browser.find_element(By.ID, "submit-command").send_keys("echo from the form; echo oops >&2; exit 3")
    browser.find_element(By.NAME, "mem").send_keys("32M")
    browser.find_element(By.NAME, "workdir").send_keys("/tmp")
    browser.find_element(By.ID, "submit-button").click()
    # the click starts the POST and its redirect; the job's id is known once its page is shown
    until(lambda: re.search(r"/jobs/[0-9a-f]{32}$", browser.current_url), "the new job's page")
    job = browser.current_url.rsplit("/", 1)[1]
    record = check(node, job)
    assert (record["owner"], record["limits"]["memory_bytes"], record["workdir"], record["net"]) == ("root", 32 << 20, "/tmp", "none")
    until(lambda: "oops" in text_of(browser, "stderr") and "from the form" in text_of(browser, "stdout"), "the output")
    until(lambda: text_of(browser, "state").startswith("EXITED (exit code 3)"), "the final state after the reload")

    running = add(node, "sleep 300")
    browser.get(node.web_url + "/")
    Select(browser.find_element(By.ID, "filter-state")).select_by_value("EXITED")
    browser.find_element(By.CSS_SELECTOR, "form.filter button").click()
    # the click starts a navigation; read the list only once the filtered page is the one shown
    until(lambda: "state=EXITED" in browser.current_url, "the filtered page")
    listed = until(lambda: text_of(browser, "jobs"), "the filtered list")
    assert job in listed and running not in listed
    assert node.lclient("-kill", running).returncode == 0
    assert console_errors(browser) == []
