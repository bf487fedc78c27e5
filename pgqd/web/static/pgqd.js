// pgqd web: live refresh of [data-live] regions, select-all checkboxes, confirmations. No framework.
"use strict";

// While a live region cannot be refreshed, a banner says so and since when; fresh data clears it.
function showStale(region, status) {
  region.dataset.stale = "true";
  region.classList.add("stale");
  const banner = document.getElementById("stale-banner");
  if (!banner) {
    return;
  }
  const since = new Date(Number(region.dataset.updated || region.dataset.loaded)).toISOString().slice(11, 19);
  const why = status === 503 ? "Database unreachable" : status ? "The server answered " + status : "The pgqd web server does not answer";
  banner.textContent = why + ": the figures below are from " + since + " UTC and are not updating. Retrying…";
  banner.dataset.status = String(status || 0);
  banner.hidden = false;
}

function showFresh(region) {
  delete region.dataset.stale;
  region.classList.remove("stale");
  const banner = document.getElementById("stale-banner");
  if (banner && !document.querySelector("[data-live][data-stale]")) {
    banner.hidden = true;
  }
}

// A region with data-live="" shows part of this very page: the page is fetched again and the element with the
// region's id taken from it. When the new part no longer has data-live (a job that finished), it stops.
function refresh(region) {
  if (document.hidden || region.contains(document.activeElement) && document.activeElement.tagName !== "BODY"
      || region.querySelector('input[type="checkbox"]:checked')) {
    return Promise.resolve();
  }
  const ownPage = !region.dataset.live;
  return fetch(ownPage ? window.location.href : region.dataset.live,
               { credentials: "same-origin", headers: { "accept": "text/html" } })
    .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
    .then((html) => {
      if (ownPage) {
        const part = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
        if (!part) {
          return Promise.reject(new Error("part missing"));
        }
        html = part.innerHTML;
        if (!part.hasAttribute("data-live")) {
          region.removeAttribute("data-live");
        }
      }
      region.innerHTML = html;
      region.dataset.updated = String(Date.now());
      showFresh(region);
      return undefined;
    })
    .catch((status) => { showStale(region, typeof status === "number" ? status : 0); });
}

function startLive(region) {
  region.dataset.loaded = String(Date.now());
  const interval = Number(region.dataset.interval || 2000);
  const tick = () => refresh(region).finally(() => {
    if (region.hasAttribute("data-live")) {
      setTimeout(tick, interval);
    }
  });
  setTimeout(tick, interval);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(startLive);
});

document.addEventListener("change", (event) => {
  const box = event.target;
  if (box.matches && box.matches("[data-select-all]")) {
    box.closest("form").querySelectorAll('input[type="checkbox"][name="id"]').forEach((b) => { b.checked = box.checked; });
  }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest ? event.target.closest("button") : null;
  if (!button || !button.form) {
    return;
  }
  let question = button.dataset.confirm;
  const scope = button.form.querySelector('select[name="scope"]');
  // "Every matching job" asks on a page of its own, which shows how many jobs that is.
  if (!question && button.value === "delete" && !(scope && scope.value === "matching")) {
    question = "Delete the selected jobs?";
  }
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
