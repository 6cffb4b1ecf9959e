// kalibr-core dashboard: polls GET api/v1/dashboard/summary and draws it (no dependencies).
//
// The API key and tenant live in sessionStorage (this tab only, never in a URL); a 401 clears
// them and shows the sign-in form with the service's message. Every value from the service is
// put in the page as text (textContent, attributes), never as HTML.
"use strict";

(() => {
  const CREDENTIALS = "kalibr-dashboard.credentials";
  const WINDOW = "kalibr-dashboard.window-hours";
  const REFRESH_MS = 5000;
  const BUCKETS = { 1: 12, 6: 24, 24: 24, 168: 28, 720: 30 };
  const COLORS = ["#2563eb", "#ea580c", "#0d9488", "#9333ea", "#db2777", "#65a30d", "#0891b2", "#a16207"];
  const UNATTRIBUTED = "#9ca3af";
  const STATUS = {
    healthy: "Healthy",
    degrading: "Degrading",
    failing: "Failing",
    insufficient_data: "Insufficient data",
  };
  const TREND = { improving: "↗ improving", stable: "→ stable", degrading: "↘ degrading" };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let inflight = null;

  // -- DOM helpers ----------------------------------------------------------------------------
  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.setAttribute("class", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  // -- formatting -----------------------------------------------------------------------------
  const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
  const count = (n) => Number(n).toLocaleString("en-US");
  function cost(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "$0";
    return x >= 0.01 ? `$${x.toFixed(4)}` : `$${Number(x.toPrecision(2))}`;
  }
  function latency(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }
  function clock(seconds, withDate) {
    const options = withDate
      ? { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
      : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    return new Date(seconds * 1000).toLocaleString(undefined, options);
  }
  const pathLabel = (p) => p.model_id || p.path_id;
  const humanize = (text) => text.replaceAll("_", " ");

  // -- credentials ----------------------------------------------------------------------------
  function credentials() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(CREDENTIALS) || "null");
      return stored && stored.key && stored.tenant ? stored : null;
    } catch {
      return null;
    }
  }

  function showSignin(message) {
    clearTimeout(timer);
    if (inflight) inflight.abort();
    sessionStorage.removeItem(CREDENTIALS);
    $("signin").hidden = false;
    $("controls").hidden = true;
    $("overview").hidden = true;
    $("error-banner").hidden = true;
    $("goals").replaceChildren();
    $("api-key").value = "";
    const error = $("signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    ($("tenant").value ? $("api-key") : $("tenant")).focus();
  }

  function showDashboard(creds) {
    $("signin").hidden = true;
    $("signin-error").hidden = true;
    $("controls").hidden = false;
    $("tenant-name").textContent = creds.tenant;
    refresh();
  }

  // -- polling --------------------------------------------------------------------------------
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function serviceMessage(body) {
    return body && body.error && typeof body.error.message === "string" ? body.error.message : "";
  }

  function problem(message) {
    const banner = $("error-banner");
    banner.textContent = message;
    banner.hidden = false;
  }

  async function refresh() {
    clearTimeout(timer);
    const creds = credentials();
    if (!creds) {
      showSignin("");
      return;
    }
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    const hours = Number($("window").value);
    const query = new URLSearchParams({ window_hours: String(hours), buckets: String(BUCKETS[hours] || 24) });
    let response;
    let body = null;
    try {
      response = await fetch(`api/v1/dashboard/summary?${query}`, {
        headers: { "X-API-Key": creds.key, "X-Tenant-ID": creds.tenant, Accept: "application/json" },
        cache: "no-store",
        signal: controller.signal,
      });
      body = await response.json().catch(() => null);
    } catch (error) {
      if (controller.signal.aborted) return;
      problem(`Cannot reach the service (${error.message}); retrying every ${REFRESH_MS / 1000} s.`);
      schedule();
      return;
    }
    if (controller.signal.aborted) return;
    inflight = null;
    if (response.status === 401) {
      showSignin(`Sign-in failed: ${serviceMessage(body) || "wrong API key or tenant"}.`);
      return;
    }
    if (!response.ok || !body) {
      const why = serviceMessage(body) || response.statusText || "unexpected answer";
      problem(`Refresh failed (HTTP ${response.status}: ${why}); retrying every ${REFRESH_MS / 1000} s.`);
      schedule();
      return;
    }
    $("error-banner").hidden = true;
    const first = $("overview").hidden;
    render(body);
    if (first) $("announce").textContent = `Showing ${body.goals.length} goal(s) of tenant ${body.tenant_id}.`;
    schedule();
  }

  // -- rendering ------------------------------------------------------------------------------
  function render(data) {
    $("overview").hidden = false;
    $("updated").textContent =
      `Last ${hoursLabel(data.window_hours)} · updated ${new Date(data.end * 1000).toLocaleTimeString(undefined, { hourCycle: "h23" })}` +
      ` · refreshes every ${REFRESH_MS / 1000} s`;
    const summary = data.summary;
    const tile = (label, value, kind) =>
      h("div", { class: `tile card${kind ? ` tile-${kind}` : ""}` }, h("dt", {}, label), h("dd", {}, count(value)));
    $("tiles").replaceChildren(
      tile("Goals", summary.total_goals),
      tile("Healthy", summary.healthy, "healthy"),
      tile("Degrading", summary.degrading, "degrading"),
      tile("Failing", summary.failing, "failing"),
      tile("Insufficient data", summary.insufficient_data),
      tile("Outcomes in window", summary.total_outcomes),
    );
    if (!data.goals.length) {
      $("goals").replaceChildren(
        h("p", { class: "card empty" },
          "No goals yet. Register paths (POST /api/v1/routing/paths) and report outcomes;",
          " they appear here within seconds."),
      );
      return;
    }
    $("goals").replaceChildren(...data.goals.map((goal) => goalCard(goal, data)));
  }

  function hoursLabel(hours) {
    if (hours < 24) return hours === 1 ? "hour" : `${hours} hours`;
    const days = hours / 24;
    return days === 1 ? "24 hours" : `${days} days`;
  }

  function colorsOf(goal) {
    const colors = new Map();
    goal.timeline.paths.forEach((p, i) => colors.set(p.path_id, COLORS[i % COLORS.length]));
    return colors;
  }

  function swatch(color) {
    const node = h("span", { class: "swatch", "aria-hidden": "true" });
    node.style.setProperty("--swatch", color);
    return node;
  }

  function goalCard(goal, data) {
    const colors = colorsOf(goal);
    const titleId = `goal-${goal.goal.replace(/[^A-Za-z0-9_-]/g, "-")}`;
    const trendText = TREND[goal.trend] || goal.trend;
    const delta = goal.trend_delta ? ` (${goal.trend_delta > 0 ? "+" : ""}${(goal.trend_delta * 100).toFixed(1)} pts)` : "";
    const kpi = (label, value, cls) => h("div", {}, h("dt", {}, label), h("dd", { class: cls }, value));
    return h("article", { class: "card goal", "aria-labelledby": titleId, "data-goal": goal.goal },
      h("header", { class: "goal-head" },
        h("h2", { id: titleId }, goal.goal),
        h("span", { class: `badge status-${goal.status}`, "data-status": goal.status }, STATUS[goal.status] || goal.status),
        h("dl", { class: "kpis" },
          kpi("Success rate", percent(goal.success_rate)),
          kpi("Samples", count(goal.sample_count)),
          kpi("Trend", trendText + delta, `trend-${goal.trend}`),
        ),
      ),
      h("div", { class: "goal-body" },
        h("section", { "aria-label": `Paths of ${goal.goal}` }, h("h3", {}, "Paths"), pathsTable(goal, colors)),
        h("section", { "aria-label": `Signals of ${goal.goal}` }, h("h3", {}, "Actionable signals"), signalList(goal)),
      ),
      h("div", { class: "charts" },
        h("figure", {},
          h("figcaption", {}, "Traffic share ", h("span", {}, "per time slice")),
          trafficChart(goal, colors, data)),
        h("figure", {},
          h("figcaption", {}, "Rolling success ", h("span", {}, `last ${data.rolling_outcomes} outcomes per path`)),
          successChart(goal, colors, data)),
      ),
      legend(goal, colors),
      disabledPaths(goal),
    );
  }

  function pathsTable(goal, colors) {
    const rows = goal.paths.filter((p) => p.enabled);
    if (!rows.length) return h("p", { class: "none" }, "No enabled path.");
    const head = ["Path", "Success", "Samples", "Trend", "Traffic", "Avg cost", "Avg latency"];
    return h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {}, head.map((label) => h("th", { scope: "col" }, label)))),
        h("tbody", {}, rows.map((p) => {
          const meter = h("span", { class: "meter", "aria-hidden": "true" }, h("span", {}));
          meter.firstChild.style.width = `${Math.round((p.success_rate || 0) * 100)}%`;
          return h("tr", { "data-path-id": p.path_id },
            h("th", { scope: "row" },
              h("span", { class: "path-name" },
                swatch(colors.get(p.path_id) || UNATTRIBUTED),
                h("span", {}, pathLabel(p), p.tool_id ? h("span", { class: "path-tool" }, p.tool_id) : null),
                p.demoted ? h("span", { class: "tag tag-warning", title: "demoted: probed with back-off until it recovers" }, "demoted") : null,
              )),
            h("td", {}, h("span", { class: "rate" }, meter, percent(p.success_rate))),
            h("td", {}, count(p.sample_count)),
            h("td", { class: `trend-${p.trend}` }, TREND[p.trend] || p.trend),
            h("td", {}, percent(p.traffic_share)),
            h("td", {}, cost(p.avg_cost_usd)),
            h("td", {}, latency(p.avg_latency_ms)),
          );
        })),
      ),
    );
  }

  function signalList(goal) {
    if (!goal.actionable_signals.length) return h("p", { class: "none" }, "No signal in this window.");
    return h("ul", { class: "signals" }, goal.actionable_signals.map((signal) =>
      h("li", { class: `signal signal-${signal.severity}`, "data-type": signal.type },
        h("div", { class: "signal-head" },
          h("span", { class: "severity" }, signal.severity),
          h("span", {}, humanize(signal.type))),
        h("p", {}, signal.message)),
    ));
  }

  function legend(goal, colors) {
    const items = goal.timeline.paths.map((p) =>
      h("li", {}, swatch(colors.get(p.path_id)), pathLabel(p), p.enabled ? null : h("span", { class: "tag" }, "disabled")));
    if (goal.timeline.buckets.some((b) => b.unattributed > 0)) {
      items.push(h("li", {}, swatch(UNATTRIBUTED), "unattributed"));
    }
    return h("ul", { class: "legend", "aria-label": "Chart legend" }, items);
  }

  function disabledPaths(goal) {
    return h("section", { class: "disabled-paths", "aria-label": `Disabled paths of ${goal.goal}` },
      h("h3", {}, "Disabled paths"),
      goal.disabled_paths.length
        ? h("ul", {}, goal.disabled_paths.map((p) =>
          h("li", { "data-path-id": p.path_id },
            h("strong", {}, pathLabel(p)),
            p.tool_id ? ` · ${p.tool_id}` : "",
            ` · ${percent(p.success_rate)} over ${count(p.sample_count)} outcomes in the window`)))
        : h("p", { class: "none" }, "None."),
    );
  }

  // -- charts (inline SVG) -------------------------------------------------------------------
  const W = 560;
  const H = 200;
  const M = { left: 40, right: 12, top: 12, bottom: 26 };
  const PW = W - M.left - M.right;
  const PH = H - M.top - M.bottom;

  function frame(title, description) {
    const id = `chart-${Math.random().toString(36).slice(2)}`;
    const svg = s("svg", {
      class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`,
    }, s("title", { id: `${id}-title` }, title), s("desc", { id: `${id}-desc` }, description));
    for (const level of [0, 0.25, 0.5, 0.75, 1]) {
      const y = M.top + PH * (1 - level);
      svg.append(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y, y2: y }));
      if (level % 0.5 === 0) {
        svg.append(s("text", { class: "axis", x: M.left - 6, y: y + 4, "text-anchor": "end" }, `${level * 100}%`));
      }
    }
    return svg;
  }

  function timeAxis(svg, data, buckets) {
    const withDate = data.window_hours > 24;
    const ticks = [[0, buckets[0].start, "start"], [PW / 2, (data.start + data.end) / 2, "middle"], [PW, data.end, "end"]];
    for (const [x, t, anchor] of ticks) {
      svg.append(s("text", { class: "axis", x: M.left + x, y: H - 8, "text-anchor": anchor }, clock(t, withDate)));
    }
  }

  function emptyNote(svg) {
    svg.append(s("text", { class: "empty-note", x: M.left + PW / 2, y: M.top + PH / 2, "text-anchor": "middle" },
      "No outcomes in this window"));
  }

  function trafficChart(goal, colors, data) {
    const buckets = goal.timeline.buckets;
    const paths = goal.timeline.paths;
    const last = [...buckets].reverse().find((b) => b.outcomes > 0);
    const description = last
      ? `Latest slice with outcomes (${count(last.outcomes)}): ` +
        paths.map((p) => `${pathLabel(p)} ${percent(last.paths[p.path_id].traffic_share)}`).join(", ")
      : "No outcomes in this window.";
    const svg = frame(`Traffic share of each path of ${goal.goal} over time`, description);
    const slot = PW / buckets.length;
    const width = Math.max(1, slot * 0.78);
    buckets.forEach((bucket, i) => {
      if (!bucket.outcomes) return;
      let y = M.top + PH;
      const x = M.left + i * slot + (slot - width) / 2;
      const span = `${clock(bucket.start, data.window_hours > 24)}–${clock(bucket.end, data.window_hours > 24)}`;
      const parts = paths.map((p) => [pathLabel(p), colors.get(p.path_id), bucket.paths[p.path_id]]);
      if (bucket.unattributed) {
        parts.push(["unattributed", UNATTRIBUTED, { traffic_share: bucket.unattributed / bucket.outcomes, outcomes: bucket.unattributed }]);
      }
      for (const [label, color, point] of parts) {
        if (!point || !point.outcomes) continue;
        const height = point.traffic_share * PH;
        y -= height;
        svg.append(s("rect", { x, y, width, height, fill: color },
          s("title", {}, `${label}: ${percent(point.traffic_share)} of ${count(bucket.outcomes)} outcomes, ${span}`)));
      }
    });
    if (!last) emptyNote(svg);
    timeAxis(svg, data, buckets);
    return svg;
  }

  function successChart(goal, colors, data) {
    const buckets = goal.timeline.buckets;
    const paths = goal.timeline.paths;
    const lastRates = paths
      .map((p) => [p, buckets[buckets.length - 1].paths[p.path_id].rolling_success_rate])
      .filter(([, rate]) => rate !== null);
    const description = lastRates.length
      ? "Latest rolling success: " + lastRates.map(([p, rate]) => `${pathLabel(p)} ${percent(rate)}`).join(", ")
      : "No outcomes in this window.";
    const svg = frame(`Rolling success rate of each path of ${goal.goal} over time`, description);
    const slot = PW / buckets.length;
    for (const p of paths) {
      const points = [];
      buckets.forEach((bucket, i) => {
        const rate = bucket.paths[p.path_id].rolling_success_rate;
        if (rate !== null) points.push([M.left + (i + 1) * slot, M.top + PH * (1 - rate), rate, bucket]);
      });
      if (!points.length) continue;
      const color = colors.get(p.path_id);
      if (points.length === 1) points.unshift([points[0][0] - Math.min(slot, 6), points[0][1], points[0][2], points[0][3]]);
      svg.append(s("polyline", {
        class: `line${p.enabled ? "" : " line-disabled"}`, stroke: color,
        points: points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "),
      }));
      const [x, y, rate, bucket] = points[points.length - 1];
      svg.append(s("circle", { cx: x, cy: y, r: 3.5, fill: color },
        s("title", {}, `${pathLabel(p)}: ${percent(rate)} at ${clock(bucket.end, data.window_hours > 24)}`)));
    }
    if (!lastRates.length) emptyNote(svg);
    timeAxis(svg, data, buckets);
    return svg;
  }

  // -- start ----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    const savedWindow = sessionStorage.getItem(WINDOW);
    if (savedWindow && BUCKETS[savedWindow]) $("window").value = savedWindow;
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const tenant = $("tenant").value.trim();
      const key = $("api-key").value.trim();
      if (!tenant || !key) {
        showSignin("Enter both the tenant and its API key.");
        return;
      }
      sessionStorage.setItem(CREDENTIALS, JSON.stringify({ tenant, key }));
      $("api-key").value = "";
      showDashboard({ tenant, key });
    });
    $("window").addEventListener("change", () => {
      sessionStorage.setItem(WINDOW, $("window").value);
      refresh();
    });
    $("refresh").addEventListener("click", refresh);
    $("signout").addEventListener("click", () => showSignin(""));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && credentials()) refresh();
    });
    const creds = credentials();
    if (creds) showDashboard(creds);
    else $("tenant").focus();
  });
})();
