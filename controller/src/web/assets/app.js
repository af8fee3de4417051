// Drover web interface: live updates by server-sent events, and the connection banner.
// No framework, no other origin. The server renders every fragment (and escapes it).
"use strict";
(function () {
  const main = document.querySelector("main[data-live]");
  const conn = document.getElementById("conn");
  function state(s) {
    if (!conn) return;
    conn.dataset.state = s;
    conn.textContent = s === "live" ? "live" : "connection lost, reconnecting…";
  }
  // Replaces #live with the same element of freshly fetched HTML (the page itself).
  async function refetch() {
    const r = await fetch(location.href, { credentials: "same-origin" });
    if (r.redirected && new URL(r.url).pathname === "/sign-in") { location.assign("/sign-in"); return; }
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.getElementById("live"), old = document.getElementById("live");
    if (fresh && old) old.replaceWith(fresh);
  }
  function render(html) {
    const old = document.getElementById("live");
    if (!old) return;
    const t = document.createElement("template");
    t.innerHTML = html;
    const fresh = t.content.getElementById("live");
    if (fresh) old.replaceWith(fresh);
  }
  let es = null, ended = false;
  function open() {
    if (!main || ended) return;
    es = new EventSource(main.dataset.live);
    es.onopen = () => state("live");
    es.addEventListener("render", (e) => render(e.data));
    es.addEventListener("changed", () => { refetch().catch(() => state("lost")); });
    es.addEventListener("end", () => { ended = true; es.close(); state("live"); });
    es.onerror = () => {
      if (ended) return;
      state("lost");
      // A closed stream (the controller answered with an error, e.g. after a restart
      // lost the session) is not retried by the browser: check and reopen ourselves.
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(() => { refetch().then(open, () => setTimeout(open, 2000)); }, 1000);
      }
    };
  }
  open();
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
