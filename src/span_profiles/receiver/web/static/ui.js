/* span-profiles: keeps the overview current while data arrives (polls its JSON API).
 *
 * Each table's header names what its columns show: <th data-key="wall_per_request.median"
 * data-format="s|ms|when|endpoint|span">; a refresh redraws the rows from the document by those
 * keys. When the store starts holding another profile type (new columns), the page reloads.
 */
(function () {
  "use strict";

  function value(row, key) {
    return key.split(".").reduce(function (v, part) {
      return v === null || v === undefined ? null : v[part];
    }, row);
  }

  function link(td, href, text) {
    var a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  }

  function typeQuery(type) {
    return type === "cpu" ? "" : "type=" + encodeURIComponent(type);
  }

  function cell(td, row, key, format, type) {
    var v = value(row, key);
    if (format === "endpoint") {
      if (v === null) td.textContent = "(no span_name)";
      else {
        var search = new URLSearchParams(window.location.search);
        search.set("service", row.service);
        search.set("span_name", v);
        link(td, "/endpoint?" + search.toString(), v);
      }
    } else if (format === "span") {
      td.className = "id";
      var query = typeQuery(type);
      link(td, "/spans/" + v + (query ? "?" + query : ""), v);
    } else if (v === null || v === undefined) {
      td.textContent = format === "s" || format === "ms" ? "\u2013" : "";
    } else if (format === "s") td.textContent = Number(v).toFixed(3);
    else if (format === "ms") td.textContent = (1000 * v).toFixed(1);
    else if (format === "when") td.textContent = new Date(v * 1000).toLocaleString();
    else td.textContent = v;
  }

  function fillTable(table, rows, type) {
    if (!table) return;
    var columns = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return { key: th.getAttribute("data-key"), format: th.getAttribute("data-format"), cls: th.className };
    });
    var body = table.querySelector("tbody");
    body.textContent = "";
    rows.forEach(function (row) {
      var tr = body.insertRow();
      columns.forEach(function (column) {
        var td = tr.insertCell();
        if (column.cls) td.className = column.cls;
        cell(td, row, column.key, column.format, type);
      });
    });
  }

  function fill(doc) {
    var type = doc.window.profile_type;
    fillTable(document.getElementById("endpoints"), doc.endpoints, type);
    fillTable(document.getElementById("top-spans"), doc.top_spans, type);
    var empty = document.getElementById("empty");
    if (empty) empty.hidden = doc.endpoints.length > 0;
    var stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = new Date().toLocaleTimeString();
  }

  var overview = document.getElementById("overview");
  if (!overview) return;
  var url = overview.getAttribute("data-api");
  var every = 1000 * Number(overview.getAttribute("data-refresh-seconds") || "5");
  // Profile type -> arrival time of its newest profile, as the page was drawn.
  var arrivals = JSON.parse(overview.getAttribute("data-arrivals") || "{}");
  function poll() {
    fetch(url, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        if (!doc) return;
        var now = doc.profile_types;
        if (Object.keys(now).join(",") !== Object.keys(arrivals).join(",")) {
          window.location.reload();
          return;
        }
        var changed = Object.keys(now).some(function (type) { return now[type] !== arrivals[type]; });
        arrivals = now;
        if (changed) fill(doc);
      })
      .catch(function () { /* the receiver may be restarting; try again on the next tick */ })
      .then(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
})();
