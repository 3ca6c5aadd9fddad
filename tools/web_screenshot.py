"""Screenshots of the web page for the README: a throwaway node (its own etcd, a node name and
ports of its own) runs a few jobs, headless chromium logs in through `lclient -web` and saves
the jobs list and a running job's page. As root, after `make prep` and with chromium and
chromium-driver installed (`make test` installs them):

    .venv/bin/python tools/web_screenshot.py [docs/web.png docs/web-job.png]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from support.host import remove_cgroup_parent  # noqa: E402  (the tests' process helpers)
from support.jobs import add, until, check  # noqa: E402
from support.processes import EtcdProcess, NodeProcess, free_port  # noqa: E402
from support.web import chrome, console_errors, web_login  # noqa: E402

JOBS = ["echo hello from $(hostname)", "echo building; sleep 1; echo 'cc: error: no input files' >&2; exit 1",
        "sleep 600"]
LIVE = "i=0; while true; do i=$((i+1)); echo \"step $i: $(date +%T) checking shard $((i % 7))\"; sleep 0.4; done"


def main(index_png: str = "docs/web.png", job_png: str = "docs/web-job.png") -> int:
    place = Path(tempfile.mkdtemp(prefix="lclusterd-shot-", dir="/var/tmp"))
    etcd = EtcdProcess(place)
    name = f"node-{free_port() % 1000}"
    node = NodeProcess(place / name, etcd.endpoint, "/screenshot", name, ["--web-listen", f"127.0.0.1:{free_port()}"])
    driver = None
    try:
        etcd.start()
        node.start()
        ids = [add(node, command) for command in JOBS]
        node.lclient("-add", "python3 train.py --epochs 3", "-mem", "256M")  # fails: no python3 in busybox
        until(lambda: check(node, ids[1])["state"] == "EXITED", "the failing build")
        node.lclient("-kill", ids[2])
        live = add(node, LIVE, "-mem", "64M", "-timeout", "10m")
        driver = chrome()
        driver.get(web_login(node)["url"])
        time.sleep(1)
        driver.save_screenshot(index_png)
        driver.get(f"{node.web_url}/jobs/{live}")
        time.sleep(4)
        driver.save_screenshot(job_png)
        errors = console_errors(driver)
        assert not errors, errors
        print(f"wrote {index_png} and {job_png}")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        node.stop()
        etcd.stop()
        remove_cgroup_parent(name)
        shutil.rmtree(place, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
