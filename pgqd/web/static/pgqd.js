// pgqd web: live refresh of [data-live] regions, select-all checkboxes, confirmations. No framework.
"use strict";

function refresh(region) {
  if (document.hidden || region.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
    return Promise.resolve();
  }
  return fetch(region.dataset.live, { credentials: "same-origin", headers: { "accept": "text/html" } })
    .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
    .then((html) => { region.innerHTML = html; region.dataset.updated = String(Date.now()); })
    .catch(() => { region.dataset.stale = "true"; });
}

function startLive(region) {
  const interval = Number(region.dataset.interval || 2000);
  const tick = () => refresh(region).finally(() => setTimeout(tick, interval));
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
