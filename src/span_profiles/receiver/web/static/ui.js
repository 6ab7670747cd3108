/* span-profiles: keeps the overview current while data arrives (polls its JSON API). */
(function () {
  "use strict";

  function cell(row, text, cls) {
    var td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function link(td, href, text) {
    td.textContent = "";
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  }

  function when(seconds) {
    return new Date(seconds * 1000).toLocaleString();
  }

  function fill(doc) {
    var endpoints = document.querySelector("#endpoints tbody");
    var spans = document.querySelector("#top-spans tbody");
    if (!endpoints || !spans) return;
    endpoints.textContent = "";
    doc.endpoints.forEach(function (e) {
      var row = endpoints.insertRow();
      cell(row, e.service);
      var name = cell(row, "");
      if (e.span_name !== null) {
        link(name, "/endpoint?service=" + encodeURIComponent(e.service) + "&span_name=" +
          encodeURIComponent(e.span_name) + window.location.search.replace(/^\?/, "&"), e.span_name);
      } else name.textContent = "(no span_name)";
      cell(row, e.requests, "num");
      cell(row, e.samples, "num");
      cell(row, e.cpu_seconds.toFixed(3), "num");
      cell(row, (1000 * e.cpu_per_request.median).toFixed(1), "num");
      cell(row, (1000 * e.cpu_per_request.p95).toFixed(1), "num");
      cell(row, when(e.last_seen));
    });
    spans.textContent = "";
    doc.top_spans.forEach(function (s) {
      var row = spans.insertRow();
      var id = cell(row, "", "id");
      link(id, "/spans/" + s.span_id, s.span_id);
      cell(row, s.span_name === null ? "" : s.span_name);
      cell(row, s.service);
      cell(row, s.samples, "num");
      cell(row, s.cpu_seconds.toFixed(3), "num");
      cell(row, when(s.last_seen));
    });
    var empty = document.getElementById("empty");
    if (empty) empty.hidden = doc.endpoints.length > 0;
    var stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = new Date().toLocaleTimeString();
  }

  var overview = document.getElementById("overview");
  if (!overview) return;
  var url = overview.getAttribute("data-api");
  var every = 1000 * Number(overview.getAttribute("data-refresh-seconds") || "5");
  var newest = overview.getAttribute("data-newest");
  function poll() {
    fetch(url, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        if (doc && String(doc.newest_arrival) !== newest) {
          newest = String(doc.newest_arrival);
          fill(doc);
        }
      })
      .catch(function () { /* the receiver may be restarting; try again on the next tick */ })
      .then(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
})();
