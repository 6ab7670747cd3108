/* span-profiles: draws flame trees and diff trees with d3-flame-graph (vendored next to this file).
 *
 * Markup it looks for (all pages, and the self-contained `span-profiles flame -o` file):
 *   <div class="flame-view" data-mode="flame|diff" data-type="cpu|wall"
 *        data-source="ID of a JSON <script>" or data-url="...">
 *     <input class="flame-search"> <button class="flame-reset"> <span class="flame-details">
 *     <div class="flame-chart"></div>
 *   </div>
 *   <div class="type-tabs" role="tablist"> <button role="tab" aria-controls="PANEL ID" data-type="wall">
 *     ... one tab per profile type; a flame view in a hidden panel is drawn when its tab is chosen.
 * Flame nodes: {name, value (samples), self, <type>_seconds (cpu_seconds, wall_seconds), children}.
 * Diff nodes:  {name, value (mean share), delta (span share - baseline share), span_share,
 *               baseline_share, span_samples, baseline_samples, children}.
 */
(function () {
  "use strict";

  function pct(x) {
    return (100 * x).toFixed(2) + "%";
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  var UNITS = { cpu: "CPU s", wall: "wall s" };

  function flameLabel(total, type) {
    var key = type + "_seconds";
    var unit = UNITS[type] || type + " s";
    return function (d) {
      var n = d.data;
      return (
        escapeHtml(n.name) +
        "<br>" + n.value + " samples (" + pct(total ? n.value / total : 0) + ")" +
        ", self " + n.self +
        "<br>" + Number(n[key]).toFixed(3) + " " + unit
      );
    };
  }

  function diffLabel(d) {
    var n = d.data;
    var sign = n.delta > 0 ? "+" : "";
    return (
      escapeHtml(n.name) +
      "<br>span " + pct(n.span_share) + " (" + n.span_samples + " samples)" +
      "<br>baseline " + pct(n.baseline_share) + " (" + n.baseline_samples + " samples)" +
      "<br>delta " + sign + (100 * n.delta).toFixed(2) + " points"
    );
  }

  // Red where the span spends a larger share than the baseline, blue where a smaller one, grey where
  // equal; the colour deepens with the delta relative to the frame's width (Pyroscope's diff view).
  function diffColor(d) {
    if (d.highlight) return "#e600e6";
    var n = d.data;
    var scale = Math.max(n.span_share, n.baseline_share);
    var t = scale > 0 ? Math.min(1, Math.abs(n.delta) / scale) : 0;
    var fade = Math.round(225 * (1 - t));
    if (n.delta > 1e-12) return "rgb(255," + fade + "," + fade + ")";
    if (n.delta < -1e-12) return "rgb(" + fade + "," + fade + ",255)";
    return "rgb(220,220,220)";
  }

  function render(view, data) {
    var mode = view.getAttribute("data-mode") || "flame";
    var type = view.getAttribute("data-type") || "cpu";
    var element = view.querySelector(".flame-chart");
    var details = view.querySelector(".flame-details");
    element.textContent = "";
    if (!data || !data.value) {
      element.textContent = "No samples.";
      return null;
    }
    var lib = window.flamegraph;
    var tip = lib.tooltip.defaultFlamegraphTooltip().html(mode === "diff" ? diffLabel : flameLabel(data.value, type));
    var chart = lib.default()
      .width(Math.max(320, element.clientWidth || 960))
      .cellHeight(18)
      .transitionDuration(250)
      .minFrameSize(1)
      .sort(false)
      .tooltip(tip)
      // A plain substring match: search text is not a regular expression.
      .setSearchMatch(function (d, term) {
        return !!term && String(d.data.name).toLowerCase().indexOf(term.toLowerCase()) >= 0;
      })
      .setSearchHandler(function (results, sum, total) {
        if (details) {
          details.textContent = results.length
            ? results.length + " frames match, " + pct(total ? sum / total : 0) + " of the samples"
            : "no frame matches";
        }
      });
    if (mode === "diff") chart.setColorMapper(diffColor);
    window.d3.select(element).datum(data).call(chart);
    var search = view.querySelector(".flame-search");
    if (search) {
      search.addEventListener("input", function () {
        if (search.value) chart.search(search.value);
        else {
          chart.clear();
          if (details) details.textContent = "";
        }
      });
    }
    var reset = view.querySelector(".flame-reset");
    if (reset) {
      reset.addEventListener("click", function () {
        chart.resetZoom();
        chart.clear();
        if (search) search.value = "";
        if (details) details.textContent = "";
      });
    }
    view.flameChart = chart;
    return chart;
  }

  function start(view) {
    if (view.started) return;
    view.started = true;
    var source = view.getAttribute("data-source");
    if (source) {
      render(view, JSON.parse(document.getElementById(source).textContent));
      return;
    }
    var url = view.getAttribute("data-url");
    if (url) {
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status + " " + response.statusText);
          return response.json();
        })
        .then(function (body) {
          render(view, body.tree);
        })
        .catch(function (error) {
          view.querySelector(".flame-chart").textContent = "Could not load the profile: " + error;
        });
    }
  }

  // Tabs, one per profile type: the chosen tab's panel is shown (its flame graphs drawn the first
  // time, at the width they get once visible) and named in the address, so a reload keeps it.
  function choose(tabs, chosen) {
    tabs.querySelectorAll('[role="tab"]').forEach(function (tab) {
      var on = tab === chosen;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      var panel = document.getElementById(tab.getAttribute("aria-controls"));
      if (panel) panel.hidden = !on;
      if (panel && on) panel.querySelectorAll(".flame-view").forEach(start);
    });
    if (/^https?:$/.test(window.location.protocol) && window.history.replaceState) {
      var url = new URL(window.location.href);
      url.searchParams.set("type", chosen.getAttribute("data-type"));
      window.history.replaceState(null, "", url.toString());
    }
  }

  function startTabs(tabs) {
    var all = Array.prototype.slice.call(tabs.querySelectorAll('[role="tab"]'));
    all.forEach(function (tab, index) {
      tab.addEventListener("click", function () { choose(tabs, tab); });
      tab.addEventListener("keydown", function (event) {
        var step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
        if (!step) return;
        var next = all[(index + step + all.length) % all.length];
        choose(tabs, next);
        next.focus();
        event.preventDefault();
      });
    });
  }

  window.spanProfilesFlame = { render: render, start: start };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".type-tabs").forEach(startTabs);
    document.querySelectorAll(".flame-view").forEach(function (view) {
      if (!view.closest("[hidden]")) start(view);
    });
  });
})();
