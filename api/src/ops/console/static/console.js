// The console's only script: keeps the live parts of a page fresh without
// a reload. Every page works without it.
//
// A live part is an element with `data-live="<fragment URL>"`. Every few
// seconds its fragment is fetched and, when it changed, swapped in. Ticked
// checkboxes stay ticked and open `details` stay open across a swap;
// nothing is swapped while the keyboard focus is inside the part (so a
// focused button never vanishes under the operator), nor while the tab is
// hidden. A fragment answer
// carries `X-Console-Fragment: 1`; anything else (the session ended and the
// sign-in page came back, an error) stops the refresh and says so.
"use strict";

(function () {
  const INTERVAL_MS = 2000;
  const regions = Array.from(document.querySelectorAll("[data-live]"));
  if (regions.length === 0) {
    return;
  }

  let stopped = false;

  function stop(why) {
    stopped = true;
    const note = document.createElement("p");
    note.className = "error";
    note.setAttribute("role", "alert");
    note.textContent = "Live updates stopped: " + why + " Reload the page.";
    regions[0].before(note);
  }

  async function refresh(region) {
    if (region.contains(document.activeElement)) {
      return;
    }
    let response;
    try {
      response = await fetch(region.dataset.live, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
    } catch (error) {
      // The API is unreachable for a moment: try again next time.
      return;
    }
    if (!response.ok || response.headers.get("X-Console-Fragment") !== "1") {
      stop(response.ok ? "the session has ended." : "the server answered " + response.status + ".");
      return;
    }
    const html = await response.text();
    if (html === region.dataset.liveLast || region.contains(document.activeElement)) {
      return;
    }
    const ticked = new Set(
      Array.from(region.querySelectorAll("input[type=checkbox]:checked"), (box) => box.value),
    );
    const opened = Array.from(region.querySelectorAll("details"), (details) => details.open);
    region.innerHTML = html;
    region.dataset.liveLast = html;
    for (const box of region.querySelectorAll("input[type=checkbox]")) {
      if (ticked.has(box.value)) {
        box.checked = true;
      }
    }
    region.querySelectorAll("details").forEach((details, i) => {
      details.open = opened[i] === true;
    });
    region.dispatchEvent(new CustomEvent("console:refreshed", { bubbles: true }));
  }

  async function tick() {
    if (stopped) {
      return;
    }
    if (!document.hidden) {
      await Promise.all(regions.map(refresh));
    }
    if (!stopped) {
      setTimeout(tick, INTERVAL_MS);
    }
  }

  setTimeout(tick, INTERVAL_MS);
})();
