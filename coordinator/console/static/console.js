// txcoord console: the little the pages need on top of plain HTML forms and links.
// Everything works without it except live refresh and the confirmation dialog.
"use strict";

// Swap the live part of the page with a fresh copy from the server (same URL + fragment=1).
async function refreshLive(live) {
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", "1");
  const reply = await fetch(url, { credentials: "same-origin" });
  if (reply.ok) {
    live.innerHTML = await reply.text();
  }
}

// The list: refresh every few seconds while the box is ticked.
function autoRefreshList(live) {
  const box = document.getElementById("autorefresh");
  const every = Number(live.dataset.refresh || 5) * 1000;
  setInterval(() => {
    if (box && box.checked && document.visibilityState === "visible") {
      refreshLive(live).catch(() => {});
    }
  }, every);
}

// One transaction: follow WatchTransaction through server-sent events until it settles.
function followTransaction(live) {
  if (live.dataset.settled === "yes" || !window.EventSource) {
    return;
  }
  const source = new EventSource(`/tx/${encodeURIComponent(live.dataset.gid)}/watch`);
  source.addEventListener("change", () => refreshLive(live).catch(() => {}));
  const stop = () => source.close();
  source.addEventListener("settled", stop);
  source.addEventListener("gone", stop);
}

// Operator actions: one more explicit yes before the form goes.
function confirmActions() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      const reason = form.querySelector("input[name=reason]").value;
      if (!window.confirm(`${form.dataset.confirm}\nReason: ${reason}`)) {
        event.preventDefault();
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live && live.dataset.gid) {
    followTransaction(live);
  } else if (live && live.dataset.refresh) {
    autoRefreshList(live);
  }
  confirmActions();
});
