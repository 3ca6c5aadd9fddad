"""The web page from outside, as curl and a browser see it: HTTP requests with urllib that
never follow a redirect (a test looks at each answer), and headless Chromium driven by
selenium (Debian's chromium and chromium-driver; `make test` installs them), whose console a
test reads for JavaScript errors."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass

from support.processes import NodeProcess

CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        assert self.headers.get("Content-Type", "").startswith("application/json"), (self.status, self.headers, self.body)
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers.items() if k.lower() == "set-cookie"]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def http(method: str, url: str, token: str | None = None, cookie: str | None = None, body=None,
         headers: dict[str, str] | None = None) -> Answer:
    """One request; `body` a dict is sent as JSON, bytes as they are. Every status is answered."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        sent["Cookie"] = cookie
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=sent)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return Answer(response.status, _headers(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, _headers(error.headers), error.read())


def _headers(message) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in message.items():
        found[key] = value if key not in found else found[key] + "\n" + value
    return found


def web_login(node: NodeProcess, *args: str) -> dict:
    """`lclient -web -json` through the node: its url, token and ends."""
    result = node.lclient("-web", "-json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def session_cookie(node: NodeProcess, login_url: str) -> str:
    """Open a login link; the `name=value` of the session cookie it sets."""
    answer = http("GET", login_url)
    assert answer.status == 303, (answer.status, answer.text)
    (cookie,) = answer.cookies()
    return cookie.split(";", 1)[0]


def csrf_of(page: str) -> str:
    """The CSRF token of a page's forms."""
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def chrome():
    """Headless Chromium under selenium, its console log kept (driver.get_log("browser"))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    assert binary and shutil.which(CHROMEDRIVER), "chromium and chromium-driver are needed: `make test` installs them"
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def console_errors(driver) -> list[str]:
    """The browser console's errors since the last call (JavaScript errors, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
