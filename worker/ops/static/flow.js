/* gradesync dashboard: flow control per destination — a state badge (why, since, rate, parked), pause / resume,
   and a per-minute chart of delivered and failed attempts drawn as inline SVG (no library, no inline script).
   Every value is inserted as text or as an SVG attribute, never as HTML. */
"use strict";

(() => {
  const { el, api, toast, confirmDialog, fmtAge, fmtNum, refreshAll } = window.gradesync;
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  const LABEL = { closed: "Closed", open: "Open", half_open: "Half-open", paused: "Paused" };
  const HEALTHY = "Delivering normally";
  // chart geometry in CSS pixels: the viewBox is as wide as the card, so text and lines are never stretched
  const H = 96, L = 28, R = 6, T = 8, B = 16;

  let pausing = null;  // the destination the pause dialog is for
  let last = null;  // the data last drawn: redrawn at the new width when the window is resized
  let resizing = null;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function niceCeil(n) {
    if (n <= 4) return 4;
    const p = 10 ** Math.floor(Math.log10(n));
    for (const m of [1, 2, 2.5, 5, 10]) if (n <= m * p) return m * p;
    return 10 * p;
  }

  function fmtRate(d) {
    const n = (x) => (Math.round(x * 10) / 10).toLocaleString("en-US");
    if (d.rate_per_minute === null) return "unlimited";
    if (d.configured_rate_per_minute === null) return `${n(d.rate_per_minute)}/min (learnt)`;
    if (Math.abs(d.rate_per_minute - d.configured_rate_per_minute) < 0.05) return `${n(d.rate_per_minute)}/min`;
    return `${n(d.rate_per_minute)} of ${n(d.configured_rate_per_minute)}/min`;
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toISOString().slice(11, 16);
  }

  function chart(series, starts, width) {
    const W = Math.max(200, Math.round(width || 300));
    const n = starts.length;
    const top = niceCeil(Math.max(0, ...series.delivered, ...series.failed));
    const x = (i) => L + (i * (W - L - R)) / Math.max(1, n - 1);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const points = (values) => values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const delivered = series.delivered.reduce((a, b) => a + b, 0);
    const failed = series.failed.reduce((a, b) => a + b, 0);
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `Last hour for ${series.name}: ${delivered} delivered, ${failed} failed attempts` });
    for (const v of [0, top / 2, top]) {
      root.append(svg("line", { class: v ? "grid" : "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { class: "tick", x: L - 5, y: y(v) + 3.5, "text-anchor": "end" }, fmtNum(v)));
    }
    for (const [i, label] of [[0, "-60m"], [Math.floor((n - 1) / 2), "-30m"], [n - 1, "now"]]) {
      root.append(svg("text", { class: "tick", x: x(i), y: H - 4, "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" }, label));
    }
    const area = `${x(0).toFixed(1)},${y(0)} ${points(series.delivered)} ${x(n - 1).toFixed(1)},${y(0)}`;
    root.append(svg("polygon", { class: "delivered-area", points: area }));
    root.append(svg("polyline", { class: "failed", points: points(series.failed) }));
    root.append(svg("polyline", { class: "delivered", points: points(series.delivered) }));  // on top
    // one hover target per minute, with the exact numbers as its tooltip
    const step = (W - L - R) / Math.max(1, n - 1);
    starts.forEach((t, i) => {
      root.append(svg("rect", { class: "hover", x: x(i) - step / 2, y: T, width: step, height: H - T - B },
        svg("title", {}, `${clock(t)} UTC: ${series.delivered[i]} delivered, ${series.failed[i]} failed attempts`)));
    });
    return root;
  }

  function fact(label, value, cls) {
    return el("div", { class: "fact" }, el("dt", { text: label }), el("dd", { class: cls || "", text: value }));
  }

  function card(d, series, starts) {
    const paused = d.state === "paused";
    const manual = paused && d.reason.startsWith("paused by ");
    const since = d.since === null ? "–" : `${fmtAge(Date.now() / 1000 - d.since)} ago`;
    const wait = d.probe_at === null ? null : d.probe_at - Date.now() / 1000;
    const probe = d.state === "open" && wait !== null ? `next probe ${wait < 1 ? "now" : "in " + fmtAge(wait)}` : null;
    // a rate lowered after a 429 recovers in time: say why, and when it is back
    const back = d.rate_until === null ? null : d.rate_until - Date.now() / 1000;
    const lowered = d.rate_reason
      ? `Rate lowered: ${d.rate_reason}; ${d.configured_rate_per_minute === null ? "unlimited" : "the configured rate"} ` +
        `${back === null || back < 1 ? "now" : "in " + fmtAge(back)}`
      : null;
    const button = manual
      ? el("button", { type: "button", class: "btn btn-primary resume", text: "Resume" })
      : el("button", { type: "button", class: "btn btn-danger-outline pause", text: "Pause…" });
    button.addEventListener("click", () => (manual ? resume(d) : openPause(d)));
    const sum = (k) => (series ? series[k].reduce((a, b) => a + b, 0) : 0);
    return el("article", { class: `flow-card state-${d.state}`, "data-destination": d.name },
      el("div", { class: "flow-head" },
        el("div", { class: "flow-name" }, el("strong", { text: d.name }), el("span", { class: "muted small", text: d.vendor })),
        el("span", { class: "state-badge", "data-state": d.state, text: LABEL[d.state] || d.state })),
      el("div", { class: "flow-reason", title: d.reason || HEALTHY }, d.reason || HEALTHY),
      el("dl", { class: "facts" },
        fact("Since", since, "since"),
        fact("Rate", fmtRate(d), d.rate_reason ? "rate lowered warn" : "rate"),
        fact("Parked", fmtNum(d.parked), d.parked ? "parked warn" : "parked")),
      el("div", { class: "muted small probe", title: lowered || "", text: probe || lowered || "" }),  // kept so charts align
      series ? el("div", { class: "chart-holder", "data-destination": d.name }) : null,
      el("div", { class: "flow-foot" },
        el("span", { class: "legend" },
          el("span", { class: "item" }, el("span", { class: "key delivered" }), `Delivered ${fmtNum(sum("delivered"))}`),
          el("span", { class: "item" }, el("span", { class: "key failed" }), `Failed attempts ${fmtNum(sum("failed"))}`)),
        button));
  }

  function render(destinations, throughput) {
    const grid = $("flow-grid");
    const bySeries = Object.fromEntries(throughput.destinations.map((s) => [s.name, s]));
    if (!destinations.length) {
      grid.replaceChildren(el("div", { class: "empty", text: query ? "No destination matches" : "No destination configured" }));
      return;
    }
    grid.replaceChildren(...destinations.map((d) => card(d, bySeries[d.name], throughput.minute_starts)));
    // the charts are drawn once their holders are laid out, at their real width
    for (const holder of grid.querySelectorAll(".chart-holder")) {
      holder.replaceChildren(chart(bySeries[holder.dataset.destination], throughput.minute_starts, holder.clientWidth));
    }
    last = [destinations, throughput];
  }

  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (last) render(...last); }, 150);
  });

  // ---- paging and search: one page of cards at a time, whatever the number of destinations -------------
  const PAGE = 24;
  let query = "";
  let cursors = [null];  // the cursor of each page seen so far (the first page: none)
  let nextCursor = null;
  let searching = null;

  async function refresh() {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (query) params.set("q", query);
    const cursor = cursors[cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    const dests = await api(`/ui/api/destinations?${params}`);
    const names = dests.destinations.map((d) => d.name);
    const throughput = await api(`/ui/api/throughput?${new URLSearchParams({ names: names.join(",") })}`);
    nextCursor = dests.next_cursor;
    const first = (cursors.length - 1) * PAGE;
    $("flow-count").textContent = dests.total
      ? `${fmtNum(first + 1)}–${fmtNum(first + names.length)} of ${fmtNum(dests.total)}` : "";
    $("flow-prev").disabled = cursors.length < 2;
    $("flow-next").disabled = !nextCursor;
    render(dests.destinations, throughput);
  }

  $("flow-filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("flow-search").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(() => {
      query = $("flow-search").value.trim();
      cursors = [null];
      refresh().catch((e) => toast(`Search failed: ${e.message}`, true));
    }, 250);
  });
  $("flow-next").addEventListener("click", () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    refresh().catch((e) => toast(e.message, true));
  });
  $("flow-prev").addEventListener("click", () => {
    if (cursors.length < 2) return;
    cursors.pop();
    refresh().catch((e) => toast(e.message, true));
  });

  // ---- pause / resume ---------------------------------------------------------------------------------
  function openPause(d) {
    pausing = d.name;
    $("pause-title").textContent = `Pause ${d.name}?`;
    $("pause-ok").textContent = `Pause ${d.name}`;
    $("pause-reason").value = "";
    $("pause-dialog").showModal();
    $("pause-reason").focus();
  }

  async function submitPause(ev) {
    ev.preventDefault();
    const name = pausing;
    const reason = $("pause-reason").value.trim();
    if (!name) return;
    if (!reason) {
      $("pause-reason").setCustomValidity("Give a reason: every operator sees it");
      $("pause-reason").reportValidity();
      return;
    }
    try {
      await api(`/ui/api/destinations/${encodeURIComponent(name)}/pause`, { method: "POST", body: { reason } });
      $("pause-dialog").close();
      toast(`Paused ${name}`);
      await refreshAll();
    } catch (e) {
      toast(`Pause failed: ${e.message}`, true);
    }
  }

  async function resume(d) {
    const ok = await confirmDialog(`Resume ${d.name}?`,
      `Deliveries start again; ${fmtNum(d.parked)} parked event(s) drain at the destination's rate limit.`,
      `Resume ${d.name}`, false);
    if (!ok) return;
    try {
      const s = await api(`/ui/api/destinations/${encodeURIComponent(d.name)}/resume`, { method: "POST", body: {} });
      toast(`Resumed ${d.name}: now ${LABEL[s.state] || s.state}`);
      await refreshAll();
    } catch (e) {
      toast(`Resume failed: ${e.message}`, true);
    }
  }

  $("pause-form").addEventListener("submit", submitPause);
  $("pause-reason").addEventListener("input", () => $("pause-reason").setCustomValidity(""));
  $("pause-cancel").addEventListener("click", () => $("pause-dialog").close());
  $("pause-dialog").addEventListener("close", () => { pausing = null; });

  window.gradesync.refreshers.push(refresh);
})();
