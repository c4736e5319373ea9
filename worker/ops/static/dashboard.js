/* gradesync operations dashboard: plain JS, no dependencies. Every value is inserted as text, never as HTML. */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const PAGE_SIZE = 25;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);

  const state = {
    filters: {},
    offset: 0,
    total: 0,
    page: [],
    selected: new Set(),
    detailId: null,
    lastOk: 0,
    knownDestinations: "",
    names: {},  // the ledger's state names (EventState), from the overview: no list of our own
  };

  // ---- helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k in node && !k.startsWith("data-")) node[k] = v;  // properties: checked, href, title, ...
      else node.setAttribute(k, v);  // attributes: colspan, aria-*, data-*
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function fmtNum(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function toast(message, isError) {
    const t = el("div", { class: isError ? "toast error" : "toast", role: "status", text: message });
    $("toasts").append(t);
    setTimeout(() => t.remove(), isError ? 9000 : 5000);
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers);
    if (opts.body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(opts.body);
    }
    const res = await fetch(path, opts);
    if (res.status === 401) {
      window.location.assign("/login");
      throw new Error("session expired");
    }
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
      throw new Error(`${res.status}: ${detail}`);
    }
    return data;
  }

  function numCell(value, kind) {
    const cls = ["num"];
    if (!value) cls.push("zero");
    else if (kind) cls.push(kind);
    return el("td", { class: cls.join(" ") }, fmtNum(value));
  }

  // ---- overview ----------------------------------------------------------------------------------------
  function renderOverview(data) {
    const rows = data.destinations;
    state.names = data.states || state.names;
    const OK = state.names.SUCCEEDED, DEAD = state.names.DEAD_LETTERED;
    const body = $("overview-body");
    const sum = (f) => rows.reduce((a, r) => a + (f(r) || 0), 0);
    const win = (r, w, o) => (r.windows[w] || {})[o] || 0;
    body.replaceChildren(...rows.map((r) => el("tr", { "data-destination": r.destination },
      el("td", { "data-col": "destination" }, el("strong", { text: r.destination })),
      el("td", { "data-col": "vendor", class: "muted col-vendor", text: r.vendor }),
      Object.assign(numCell(r.queue_depth, r.queue_depth > 1000 ? "warn" : ""), { title: "messages waiting" }),
      numCell(r.in_progress),
      numCell(r.scheduled_retries, "warn"),
      numCell(r.dead_letters, "bad"),
      el("td", { class: r.oldest_dead_letter_age_seconds ? "num bad" : "num zero" },
        fmtAge(r.oldest_dead_letter_age_seconds)),
      numCell(win(r, "5m", OK), "good"),
      numCell(win(r, "5m", DEAD), "bad"),
      numCell(win(r, "60m", OK), "good"),
      numCell(win(r, "60m", DEAD), "bad"),
    )));
    for (const tr of body.children) {
      const cells = tr.children;
      const cols = ["destination", "vendor", "queue_depth", "in_progress", "scheduled_retries", "dead_letters",
        "oldest_dead_letter", "succeeded_5m", "failed_5m", "succeeded_60m", "failed_60m"];
      cols.forEach((c, i) => cells[i].setAttribute("data-col", c));
    }
    if (!rows.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 11, class: "empty", text: "No destination configured" })));

    const oldest = rows.map((r) => r.oldest_dead_letter_age_seconds).filter((x) => x !== null);
    $("t-queued").textContent = rows.some((r) => r.queue_depth === null) ? "n/a" : fmtNum(sum((r) => r.queue_depth));
    $("t-inprogress").textContent = fmtNum(sum((r) => r.in_progress));
    $("t-scheduled").textContent = fmtNum(sum((r) => r.scheduled_retries));
    const dead = sum((r) => r.dead_letters);
    $("t-dead").textContent = fmtNum(dead);
    $("tile-dead").classList.toggle("alert", dead > 0);
    $("t-oldest").textContent = oldest.length ? fmtAge(Math.max(...oldest)) : "–";
    $("t-ok").textContent = `${fmtNum(sum((r) => win(r, "5m", OK)))} / ${fmtNum(sum((r) => win(r, "60m", OK)))}`;
    const failed5 = sum((r) => win(r, "5m", DEAD));
    $("t-failed").textContent = `${fmtNum(failed5)} / ${fmtNum(sum((r) => win(r, "60m", DEAD)))}`;
    $("tile-failed").classList.toggle("alert", failed5 > 0);

    const key = rows.map((r) => `${r.destination}:${r.vendor}`).join(",");
    if (key !== state.knownDestinations) {
      state.knownDestinations = key;
      fillSelect($("f-destination"), rows.map((r) => r.destination));
      fillSelect($("f-vendor"), [...new Set(rows.map((r) => r.vendor))].sort());
    }
  }

  function fillSelect(select, values) {
    const current = select.value;
    select.replaceChildren(el("option", { value: "", text: "All" }), ...values.map((v) => el("option", { value: v, text: v })));
    select.value = values.includes(current) ? current : "";
  }

  async function refreshHealth() {
    try {
      const res = await fetch("/healthz", { headers: { Accept: "application/json" } });
      const data = await res.json();
      for (const name of ["redis", "broker"]) {
        const pill = $(`health-${name}`);
        pill.dataset.state = data.checks[name];
        pill.title = (data.errors || {})[name] || `${name}: ok`;
      }
    } catch (e) {
      for (const name of ["redis", "broker"]) $(`health-${name}`).dataset.state = "unknown";
    }
  }

  // ---- dead letters --------------------------------------------------------------------------------------
  function filterQuery() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) q.set(k, v);
    return q;
  }

  async function refreshDeadLetters() {
    const q = filterQuery();
    q.set("limit", PAGE_SIZE);
    q.set("offset", state.offset);
    const data = await api(`/ui/api/dead-letters?${q}`);
    if (data.total > 0 && data.items.length === 0 && state.offset > 0) {
      state.offset = Math.max(0, Math.floor((data.total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return refreshDeadLetters();
    }
    state.total = data.total;
    state.page = data.items;
    renderDeadLetters();
  }

  function renderDeadLetters() {
    const body = $("dlq-body");
    if (!state.page.length) {
      const filtered = Object.values(state.filters).some(Boolean);
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty",
        text: filtered ? "No dead letter matches these filters" : "The dead-letter queue is empty" })));
    } else {
      body.replaceChildren(...state.page.map((d) => {
        const box = el("input", { type: "checkbox", checked: state.selected.has(d.event_id), "aria-label": "select" });
        box.addEventListener("click", (ev) => ev.stopPropagation());
        box.addEventListener("change", () => {
          if (box.checked) state.selected.add(d.event_id); else state.selected.delete(d.event_id);
          renderSelection();
          tr.classList.toggle("selected", box.checked);
        });
        const open = el("a", { href: "#", class: "link", text: d.event_id.slice(0, 8) + "…", title: d.event_id });
        const tr = el("tr", { "data-event-id": d.event_id, class: state.selected.has(d.event_id) ? "selected" : "" },
          el("td", { class: "check" }, box),
          el("td", {}, open),
          el("td", { text: d.destination }),
          el("td", { class: "muted col-vendor", text: d.vendor }),
          el("td", { class: "mono learner", text: d.learner_id || "–", title: d.learner_id || "" }),
          el("td", { title: fmtTime(d.dead_lettered_at) }, `${fmtAge(d.age_seconds)} ago`),
          el("td", { class: "num", text: d.attempts }),
          el("td", { class: "reason", text: d.reason }),
        );
        tr.addEventListener("click", (ev) => { ev.preventDefault(); openDetail(d.event_id); });
        return tr;
      }));
    }
    const first = state.total ? state.offset + 1 : 0;
    const last = Math.min(state.offset + PAGE_SIZE, state.total);
    $("page-info").textContent = state.total ? `${first}–${last} of ${fmtNum(state.total)}` : "";
    $("dlq-count").textContent = `${fmtNum(state.total)} matching`;
    $("prev").disabled = state.offset === 0;
    $("next").disabled = state.offset + PAGE_SIZE >= state.total;
    $("select-page").checked = state.page.length > 0 && state.page.every((d) => state.selected.has(d.event_id));
    renderSelection();
  }

  function renderSelection() {
    const n = state.selected.size;
    $("selection").textContent = n ? `${n} selected` : "No dead letter selected";
    $("requeue-selected").disabled = n === 0;
    $("purge-selected").disabled = n === 0;
    $("requeue-all").disabled = state.total === 0;
    $("purge-all").disabled = state.total === 0;
    $("requeue-selected").textContent = n ? `Requeue selected (${n})` : "Requeue selected";
    $("purge-selected").textContent = n ? `Purge selected (${n})` : "Purge selected";
    $("requeue-all").textContent = state.total ? `Requeue all matching (${fmtNum(state.total)})` : "Requeue all matching";
    $("purge-all").textContent = state.total ? `Purge all matching (${fmtNum(state.total)})` : "Purge all matching";
  }

  function selectionBody(which) {
    if (which === "selected") return { event_ids: [...state.selected] };
    const f = Object.fromEntries(Object.entries(state.filters).filter(([, v]) => v));
    return Object.keys(f).length ? { filter: f, all: true } : { all: true };
  }

  // ---- actions ---------------------------------------------------------------------------------------
  function confirmDialog(title, text, okLabel, danger) {
    return new Promise((resolve) => {
      const dlg = $("confirm");
      $("confirm-title").textContent = title;
      $("confirm-text").textContent = text;
      const ok = $("confirm-ok");
      ok.textContent = okLabel;
      ok.className = danger ? "btn btn-danger" : "btn btn-primary";
      const done = (value) => {
        ok.removeEventListener("click", onOk);
        $("confirm-cancel").removeEventListener("click", onCancel);
        dlg.removeEventListener("cancel", onCancel);
        dlg.close();
        resolve(value);
      };
      const onOk = () => done(true);
      const onCancel = (ev) => { if (ev) ev.preventDefault(); done(false); };
      ok.addEventListener("click", onOk);
      $("confirm-cancel").addEventListener("click", onCancel);
      dlg.addEventListener("cancel", onCancel);
      dlg.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function requeue(body, label) {
    const count = body.event_ids ? body.event_ids.length : state.total;
    if (!body.event_ids || count > 1) {
      const ok = await confirmDialog("Requeue dead letters?",
        `${fmtNum(count)} ${label} will be queued again with fresh attempts (rate-limited per destination).`,
        `Requeue ${fmtNum(count)}`, false);
      if (!ok) return false;
    }
    try {
      const r = await api("/ui/api/dead-letters/requeue", { method: "POST", body });
      const skipped = Object.keys(r.skipped || {}).length;
      toast(`Requeued ${r.done} of ${r.matched}` + (skipped ? ` (${skipped} skipped)` : ""), skipped > 0);
      for (const id of r.event_ids) state.selected.delete(id);
      await refreshAll();
      return true;
    } catch (e) {
      toast(`Requeue failed: ${e.message}`, true);
      return false;
    }
  }

  async function purge(body, label) {
    let preview;
    try {
      preview = await api("/ui/api/dead-letters/purge", { method: "POST", body: Object.assign({}, body, { dry_run: true }) });
    } catch (e) {
      toast(`Purge failed: ${e.message}`, true);
      return false;
    }
    if (!preview.matched) { toast("Nothing to purge", true); return false; }
    const ok = await confirmDialog("Purge for good?",
      `${fmtNum(preview.matched)} ${label} will be deleted permanently, with their events and attempt history. This cannot be undone.`,
      `Purge ${fmtNum(preview.matched)}`, true);
    if (!ok) return false;
    try {
      // purge exactly what was previewed and confirmed, not what arrived since
      const target = body.event_ids || preview.event_ids.length > 10000 ? body
        : Object.assign({}, body, { all: undefined, filter: undefined, event_ids: preview.event_ids });
      const r = await api("/ui/api/dead-letters/purge", { method: "POST", body: Object.assign({}, target, { confirm: true }) });
      toast(`Purged ${r.done} dead letter${r.done === 1 ? "" : "s"}`);
      for (const id of r.event_ids) state.selected.delete(id);
      await refreshAll();
      return true;
    } catch (e) {
      toast(`Purge failed: ${e.message}`, true);
      return false;
    }
  }

  // ---- detail drawer -------------------------------------------------------------------------------------
  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) dl.append(el("dt", { text: k }), el("dd", {}, v === null || v === undefined || v === "" ? "–" : v));
    return dl;
  }

  async function openDetail(eventId) {
    let v;
    try {
      v = await api(`/ui/api/dead-letters/${encodeURIComponent(eventId)}`);
    } catch (e) {
      toast(`Could not load ${eventId}: ${e.message}`, true);
      return;
    }
    state.detailId = eventId;
    $("detail-title").textContent = v.event_id;
    const err = v.final_error || {};
    const history = v.history || [];
    const attemptsRows = history.map((h) => el("tr", {},
      el("td", { class: "num", text: h.n }),
      el("td", { text: fmtTime(h.started_at).slice(11), title: fmtTime(h.started_at) }),
      el("td", { class: "num", text: h.duration_ms !== undefined ? `${h.duration_ms} ms` : "–" }),
      el("td", {}, el("span", { class: h.outcome === state.names.SUCCEEDED ? "badge ok" : h.outcome === "retry" ? "badge warn" : "badge bad", text: h.outcome || "–" })),
      el("td", { class: "num", text: h.status || "–" }),
      el("td", { text: h.error_class || "" }),
      el("td", { class: "msg", text: h.vendor_message || h.message || h.detail || "" }),
    ));
    $("detail-body").replaceChildren(
      kv([
        ["State", el("span", { class: "badge bad", text: v.state })],
        ["Destination", `${v.destination} (${v.vendor})`],
        ["Learner", v.learner_id],
        ["Occurred at", fmtTime(v.occurred_at)],
        ["Published at", fmtTime(v.created_at)],
        ["Dead-lettered at", fmtTime(v.dead_lettered_at)],
        ["Attempts", el("strong", { id: "detail-attempts", text: String(v.attempts) })],
        ["Requeues", String(v.requeues || 0)],
      ]),
      el("div", {},
        el("h3", { class: "section-title", text: "Final error" }),
        el("div", { class: "error-box" },
          el("strong", { text: [err.error_class, err.status ? `HTTP ${err.status}` : ""].filter(Boolean).join(" · ") || "Error" }),
          el("div", { class: "msg", text: v.reason || err.message || "" }),
          err.vendor_message && !(v.reason || "").includes(err.vendor_message)
            ? el("div", { class: "msg muted", text: `Vendor: ${err.vendor_message}` }) : null,
        )),
      el("div", {},
        el("h3", { class: "section-title", text: `Attempts (${history.length})` }),
        el("div", { class: "table-wrap" }, el("table", { class: "grid attempts", id: "detail-history" },
          el("thead", {}, el("tr", {}, ...["#", "Started", "Duration", "Outcome", "HTTP", "Error", "Message"].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...(attemptsRows.length ? attemptsRows : [el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No attempt recorded" }))])),
        ))),
      el("div", {},
        el("h3", { class: "section-title", text: "Event (secrets masked)" }),
        el("pre", { class: "json", text: JSON.stringify(v.event, null, 2) })),
    );
    const dlg = $("detail");
    if (!dlg.open) dlg.showModal();
  }

  function closeDetail() {
    state.detailId = null;
    $("detail").close();
  }

  // ---- refresh loop ----------------------------------------------------------------------------------------
  async function refreshAll() {
    try {
      const [overview, , audit] = await Promise.all([api("/ui/api/overview"), refreshDeadLetters(), api("/ui/api/audit?limit=10"), refreshHealth(),
        ...shared.refreshers.map((f) => f())]);
      renderOverview(overview);
      renderAudit(audit.items);
      state.lastOk = Date.now();
      $("updated").textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC`;
      $("updated").classList.remove("stale");
    } catch (e) {
      $("updated").textContent = `Update failed: ${e.message}`;
      $("updated").classList.add("stale");
    }
  }

  function renderAudit(items) {
    const body = $("audit-body");
    if (!items.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "empty", text: "No operator action yet" })));
      return;
    }
    body.replaceChildren(...items.map((a) => {
      const filters = Object.entries(a.filters || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      let sel = a.selection === "ids" ? `${a.matched || a.event_ids.length} selected` : filters ? `all where ${filters}` : "all";
      if (a.selection === "destination") sel = a.reason ? `${a.destination}: ${a.reason}` : a.destination;
      if (a.selection === "audit") sel = `audit ${a.filters.audit}` + (a.filters.verdicts ? ` (${a.filters.verdicts.join(", ")})` : "");
      return el("tr", {},
        el("td", { text: fmtTime(a.at_iso) }),
        el("td", {}, el("span", { class: "badge", text: a.actor })),
        el("td", { text: a.action + (a.dry_run ? " (dry run)" : "") }),
        el("td", { class: "num", text: `${a.count} / ${a.matched}` }),
        el("td", { class: "muted", text: sel }),
      );
    }));
  }

  let timer = null;
  function schedule() {
    clearInterval(timer);
    if ($("autorefresh").checked) timer = setInterval(refreshAll, REFRESH_MS);
  }

  // ---- wiring ------------------------------------------------------------------------------------------------
  $("filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData($("filters"));
    state.filters = Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()]));
    state.offset = 0;
    state.selected.clear();
    refreshAll();
  });
  $("f-clear").addEventListener("click", () => {
    $("filters").reset();
    state.filters = {};
    state.offset = 0;
    state.selected.clear();
    refreshAll();
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); refreshDeadLetters(); });
  $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; refreshDeadLetters(); });
  $("select-page").addEventListener("change", (ev) => {
    for (const d of state.page) { if (ev.target.checked) state.selected.add(d.event_id); else state.selected.delete(d.event_id); }
    renderDeadLetters();
  });
  $("requeue-selected").addEventListener("click", () => requeue(selectionBody("selected"), "selected dead letter(s)"));
  $("requeue-all").addEventListener("click", () => requeue(selectionBody("all"), "matching dead letter(s)"));
  $("purge-selected").addEventListener("click", () => purge(selectionBody("selected"), "selected dead letter(s)"));
  $("purge-all").addEventListener("click", () => purge(selectionBody("all"), "matching dead letter(s)"));
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("close", () => { state.detailId = null; });
  $("detail-requeue").addEventListener("click", async () => {
    const id = state.detailId;
    if (id && await requeue({ event_ids: [id] }, "dead letter")) closeDetail();
  });
  $("detail-purge").addEventListener("click", async () => {
    const id = state.detailId;
    if (id && await purge({ event_ids: [id] }, "dead letter")) closeDetail();
  });
  $("autorefresh").addEventListener("change", schedule);

  // other scripts of the page (flow.js) use these helpers and add their own refresh to the loop
  const shared = window.gradesync = { el, api, toast, confirmDialog, fmtAge, fmtNum, fmtTime, refreshAll, refreshers: [] };
  document.addEventListener("DOMContentLoaded", () => { refreshAll(); schedule(); });
})();
