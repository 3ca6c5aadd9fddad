// The live tail of a job's output on its page: polls /api/jobs/<id>/logs from the offsets
// read so far and appends what is new, until the job has ended and all of it is shown; then
// reloads the page once, for the job's final details.
"use strict";

(function () {
  const box = document.getElementById("output");
  if (!box) {
    return;
  }
  const panes = [document.getElementById("stdout"), document.getElementById("stderr")];
  const status = document.getElementById("tail-status");
  const state = document.getElementById("state");
  const endedAtLoad = box.dataset.ended === "true";
  const offsets = [0, 0];
  const POLL_MS = 500;

  function append(pane, text) {
    if (!text) {
      return;
    }
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    pane.append(document.createTextNode(text));  // text, never markup
    if (atBottom) {
      pane.scrollTop = pane.scrollHeight;
    }
  }

  async function poll() {
    const url = `${box.dataset.logs}?stdout_offset=${offsets[0]}&stderr_offset=${offsets[1]}`;
    let answer;
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      answer = await response.json();
      if (!response.ok) {
        status.textContent = answer.error;
        setTimeout(poll, 5 * POLL_MS);
        return;
      }
    } catch (error) {
      status.textContent = "cannot reach the node; trying again";
      setTimeout(poll, 5 * POLL_MS);
      return;
    }
    append(panes[0], answer.stdout);
    append(panes[1], answer.stderr);
    offsets[0] = answer.offsets.stdout;
    offsets[1] = answer.offsets.stderr;
    if (answer.more) {
      setTimeout(poll, 0);
    } else if (!answer.ended) {
      status.textContent = "live";
      if (state && !state.textContent.startsWith(answer.state)) {
        state.textContent = answer.state;
      }
      setTimeout(poll, POLL_MS);
    } else if (!endedAtLoad) {
      window.location.reload();
    } else {
      status.textContent = "";
    }
  }

  poll();
}());
