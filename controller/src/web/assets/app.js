// Drover web interface: live updates by server-sent events, and the connection banner.
// No framework, no other origin. The server renders every fragment (and escapes it).
"use strict";
(function () {
  const main = document.querySelector("main[data-live]");
  const conn = document.getElementById("conn");
  const WORDS = { live: "live", ended: "ended: final state", lost: "connection lost, reconnecting…" };
  function state(s) {
    if (!conn) return;
    conn.dataset.state = s;
    conn.textContent = WORDS[s];
  }
  // The event log shows its newest line, unless the reader scrolled up in it.
  function follow(old, fresh) {
    const a = old && old.querySelector("#events"), b = fresh.querySelector("#events");
    if (!b) return;
    const atEnd = !a || a.scrollHeight - a.scrollTop - a.clientHeight < 24;
    if (atEnd) b.scrollTop = b.scrollHeight;
    else b.scrollTop = a.scrollTop;
  }
  // Keeps open what the reader opened (a log tail, a hook's output) across a render.
  function keepOpen(old, fresh) {
    if (!old) return;
    const open = new Set([...old.querySelectorAll("details[open]")].map(path));
    for (const d of fresh.querySelectorAll("details")) if (open.has(path(d))) d.open = true;
  }
  function path(d) {
    const owner = d.closest("[data-host],[data-hook]");
    return (owner ? owner.getAttribute("data-host") || owner.getAttribute("data-hook") : "") + "/" + d.className;
  }
  function swap(fresh) {
    const old = document.getElementById("live");
    if (!fresh || !old) return;
    keepOpen(old, fresh);
    old.replaceWith(fresh);
    follow(old, fresh);
  }
  // A deployment page whose deployment has ended: nothing more will change.
  function finished() {
    return !!document.querySelector("#live[data-ended]");
  }
  // Replaces #live with the same element of freshly fetched HTML (the page itself).
  async function refetch() {
    const r = await fetch(location.href, { credentials: "same-origin" });
    if (r.redirected && new URL(r.url).pathname === "/sign-in") { location.assign("/sign-in"); return; }
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    swap(doc.getElementById("live"));
  }
  function render(html) {
    const t = document.createElement("template");
    t.innerHTML = html;
    swap(t.content.getElementById("live"));
  }
  let es = null, ended = false, heard = Date.now();
  // The server pings a quiet stream every few seconds: one silent much longer is dead
  // even if the browser still holds it open (a network change can leave it mute).
  const SILENT_MS = 12000;
  function end() {
    ended = true;
    if (es) es.close();
    state("ended");
  }
  function open() {
    if (!main || ended) return;
    heard = Date.now();
    es = new EventSource(main.dataset.live);
    es.onopen = () => { heard = Date.now(); state("live"); };
    // A render is proof of a live stream, whatever error came before it; the render
    // of an ended deployment is the last.
    es.addEventListener("render", (e) => { heard = Date.now(); render(e.data); if (finished()) end(); else state("live"); });
    es.addEventListener("changed", () => { heard = Date.now(); refetch().catch(() => state("lost")); });
    es.addEventListener("ping", () => { heard = Date.now(); });
    es.addEventListener("end", end);
    es.onerror = () => {
      if (ended) return;
      state("lost");
      // A closed stream (the controller answered with an error, e.g. after a restart
      // lost the session, or Chromium gave up on a network change) is not retried by
      // the browser: fetch the page again, then reopen, soon.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(() => {
          refetch().then(() => (finished() ? end() : open()), () => setTimeout(open, 1000));
        }, 300);
      }
    };
  }
  if (finished()) state("ended");
  else open();
  setInterval(() => {
    if (!es || ended || es.readyState === EventSource.CLOSED || Date.now() - heard < SILENT_MS) return;
    state("lost");
    es.close();
    refetch().then(() => (finished() ? end() : open()), () => setTimeout(open, 1000));
  }, 2000);
  // Scroll an event log to its newest line when the page opens.
  const log = document.getElementById("events");
  if (log) log.scrollTop = log.scrollHeight;
  // Forms that ask to type a name to confirm: block submission until it matches.
  for (const form of document.querySelectorAll("form[data-deploy]")) {
    const select = form.querySelector("select[name=environment]");
    const confirm = form.querySelector("input[name=confirm]");
    if (!select || !confirm) continue;
    const sync = () => {
      const opt = select.selectedOptions[0];
      const needs = opt && opt.dataset.confirm === "true";
      confirm.hidden = !needs;
      confirm.required = needs;
      confirm.placeholder = needs ? "type " + select.value + " to confirm" : "";
    };
    select.addEventListener("change", sync);
    sync();
  }
})();
