// pgqd web: live refresh of [data-live] regions, select-all checkboxes, confirmations. No framework.
"use strict";

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
      return undefined;
    })
    .catch(() => { region.dataset.stale = "true"; });
}

function startLive(region) {
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
  if (!question && scope && scope.value === "matching") {
    question = button.textContent.trim() + ": apply to every live job matching the filter?";
  }
  if (!question && button.value === "delete") {
    question = "Delete the selected jobs?";
  }
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
