// runcycles dashboard: live refresh of the tenant page (no external code, no stored secrets).
// Every few seconds the #live block is re-fetched as an HTML fragment with the session
// cookie (same origin only) and swapped in; TTLs count down between refreshes.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var url = live.getAttribute("data-live-url");
  var every = Math.max(parseInt(live.getAttribute("data-refresh") || "5", 10), 1) * 1000;
  var toggle = document.getElementById("live-on");
  var state = document.getElementById("live-state");
  var stopped = false;

  function say(text) { if (state) state.textContent = text; }

  function fmt(ms) {
    var s = Math.max(Math.floor(ms / 1000), 0);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) return m + "m " + (s < 10 ? "0" : "") + s + "s";
    var h = Math.floor(m / 60); m = m % 60;
    return h + "h " + (m < 10 ? "0" : "") + m + "m";
  }

  var fetchedAt = Date.now();
  function tick() {
    var cells = live.querySelectorAll("[data-ttl-ms]");
    var gone = Date.now() - fetchedAt;
    for (var i = 0; i < cells.length; i++) {
      cells[i].textContent = fmt(parseInt(cells[i].getAttribute("data-ttl-ms"), 10) - gone);
    }
  }

  function refresh() {
    if (stopped || document.hidden || (toggle && !toggle.checked)) return;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          stopped = true;
          say("signed out: reload to sign in again");
          return null;
        }
        if (!r.ok) { say("refresh failed (" + r.status + ")"); return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        live.innerHTML = html;
        fetchedAt = Date.now();
        say("updated " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("server unreachable"); });
  }

  setInterval(refresh, every);
  setInterval(tick, 1000);
})();
