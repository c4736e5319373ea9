/* gradesync dashboard: grade audits — the last audit per destination (counts), its drifted and missing
   cells, and a resync of the missing cells after a confirmation. Values are inserted as text only. */
"use strict";

(() => {
  const { el, api, toast, confirmDialog, fmtAge, fmtNum, refreshAll } = window.gradesync;
  const $ = (id) => document.getElementById(id);
  const VERDICTS = ["match", "drifted", "missing", "unreadable", "error"];

  function cellRow(c) {
    const found = c.found && c.found.score !== null && c.found.score !== undefined
      ? `${fmtNum(c.found.score)}${c.found.maximum ? " / " + fmtNum(c.found.maximum) : ""}` : "none";
    const sent = c.delivered && c.delivered.score !== null
      ? `${fmtNum(c.delivered.score)}${c.delivered.maximum ? " / " + fmtNum(c.delivered.maximum) : ""}` : "–";
    return el("tr", { class: `verdict-${c.verdict}` },
      el("td", { text: c.verdict }), el("td", { class: "mono", text: c.learner_id || "" }),
      el("td", { class: "num", text: sent }), el("td", { class: "num", text: found }),
      el("td", { class: "muted small", text: c.reason || "" }), el("td", { class: "mono small", text: c.event_id || "" }));
  }

  async function resync(d) {
    const n = d.missing.length;
    const ok = await confirmDialog(`Resync ${d.destination}?`,
      `Republish the last grade of ${fmtNum(d.counts.missing || n)} missing cell(s) with a fresh timestamp. ` +
      "Drifted cells are left alone: a teacher's override wins.", `Resync ${d.destination}`, true);
    if (!ok) return;
    try {
      const r = await api(`/ui/api/audits/${encodeURIComponent(d.audit)}/resync`,
        { method: "POST", body: { verdicts: ["missing"], confirm: true } });
      toast(`Republished ${Object.keys(r.republished).length} grade(s) of ${d.destination}`);
      await refreshAll();
    } catch (e) {
      toast(`Resync failed: ${e.message}`, true);
    }
  }

  function render(data) {
    const body = $("audits-body");
    if (!data.destinations.length) {
      const running = data.running.length ? `An audit is running (${fmtNum(data.running[0].done)} of ${fmtNum(data.running[0].total)} cells)` : "No audit yet: run gradesync audit";
      body.replaceChildren(el("tr", {}, el("td", { colspan: "8", class: "empty", text: running })));
      $("audit-cells").replaceChildren();
      return;
    }
    body.replaceChildren(...data.destinations.map((d) => {
      const button = el("button", { type: "button", class: "btn btn-danger-outline resync", text: "Resync missing…" });
      button.disabled = !(d.counts.missing > 0);
      button.addEventListener("click", () => resync(d));
      const when = d.finished_at ? `${fmtAge(Date.now() / 1000 - d.finished_at)} ago` : "–";
      return el("tr", { "data-destination": d.destination },
        el("td", { text: d.destination }), el("td", { class: "muted small", text: when }),
        ...VERDICTS.map((v) => el("td", { class: `num ${v}`, text: fmtNum(d.counts[v] || 0) })),
        el("td", {}, button));
    }));
    const cells = data.destinations.flatMap((d) => [...d.drifted, ...d.missing]);
    $("audit-cells").replaceChildren(cells.length ? el("div", { class: "table-wrap" },
      el("table", { class: "grid", id: "audit-cells-table" },
        el("thead", {}, el("tr", {}, ...["Verdict", "Learner", "Delivered", "Held now", "Why", "Event"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...cells.map(cellRow)))) : el("div", { class: "muted small", text: "No drifted or missing cell" }));
  }

  async function refresh() {
    render(await api("/ui/api/audits"));
  }

  window.gradesync.refreshers.push(refresh);
})();
