// History: stored predictions, newest first, filtered by model, flagged only, feedback and time
// window; the flag rate over the window beside the model's alpha; a click opens the card.

import { api } from "../api.js";
import { predictionCard } from "../card.js";
import { errorBox, h, percent, score, when } from "../dom.js";
import { loadModels, modelInfo, state } from "../state.js";

const WINDOWS = [
  ["15m", "last 15 minutes", 15 * 60],
  ["1h", "last hour", 3600],
  ["24h", "last 24 hours", 24 * 3600],
  ["7d", "last 7 days", 7 * 24 * 3600],
  ["", "all time", null],
];
const PAGE_SIZE = 50;
// The feedback filter's values (the API's ?feedback=) and labels.
const FEEDBACK = [
  ["", "any"],
  ["labelled", "with feedback"],
  ["correct", "marked correct"],
  ["wrong", "marked wrong"],
  ["none", "without feedback"],
];

let root;
let form;
let summary;
let tbody;
let more;
let message;
let dialog;
let cursor = null;
let generation = 0;

function filters() {
  const data = new FormData(form);
  const window = data.get("window");
  const span = WINDOWS.find(([v]) => v === window)?.[2] ?? null;
  return {
    model: data.get("model") || undefined,
    flagged: data.get("flagged") ? "true" : undefined,
    feedback: data.get("feedback") || undefined,
    window: window || undefined,
    since: span ? new Date(Date.now() - span * 1000).toISOString() : undefined,
  };
}

function alphaText(model) {
  const alphas = (model ? [modelInfo(model)] : state.models).map((m) => m?.detector?.alpha).filter((a) => a !== undefined && a !== null);
  const unique = [...new Set(alphas)];
  if (!unique.length) return "alpha unknown";
  if (unique.length === 1) return `alpha ${percent(unique[0])}`;
  return `alpha ${unique.map((a) => percent(a)).join(" / ")} (per model)`;
}

async function showSummary(f, gen) {
  summary.textContent = "Counting…";
  try {
    const stats = await api.stats({ model: f.model, window: f.window });
    if (gen !== generation) return;
    const label = WINDOWS.find(([v]) => v === (f.window || ""))?.[1];
    const alphas = (f.model ? [modelInfo(f.model)] : state.models).map((m) => m?.detector?.alpha).filter((a) => a != null);
    const worst = alphas.length ? Math.max(...alphas) : null;
    const high = stats.flag_rate !== null && stats.flag_rate !== undefined && worst !== null && stats.count >= 20 && stats.flag_rate > 2 * worst;
    summary.replaceChildren(
      h("span", { class: "flag-rate", dataset: { rate: stats.flag_rate ?? "" } }, `Flag rate over the ${label}: `, h("strong", {}, stats.flag_rate === null || stats.flag_rate === undefined ? "–" : percent(stats.flag_rate))),
      ` (${stats.flagged} of ${stats.count}) · `,
      h("span", { class: "alpha" }, alphaText(f.model)),
      ...(high ? [h("span", { class: "warn" }, " · well above alpha: inputs may have drifted or be under attack")] : [])
    );
  } catch (err) {
    if (gen === generation) summary.replaceChildren(errorBox(err));
  }
}

function row(p) {
  const open = h("button", { type: "button", class: "link open-card", onclick: () => openCard(p.id) }, p.class_name);
  return h(
    "tr",
    { class: `history-row ${p.flagged ? "flagged" : "trusted"}`, dataset: { id: p.id, flagged: String(p.flagged) } },
    h("td", {}, when(p.created_at)),
    h("td", {}, p.model),
    h("td", {}, open),
    h("td", { class: "num" }, score(p.trust_score)),
    h("td", {}, h("span", { class: `pill ${p.flagged ? "flagged" : "trusted"}` }, p.flagged ? "⚠ Flagged" : "✓ Trusted")),
    h("td", { class: "feedback-cell", dataset: { feedback: p.feedback ? String(p.feedback.correct) : "" } }, p.feedback ? (p.feedback.correct ? "correct" : "wrong") : "–")
  );
}

async function loadPage(reset) {
  const gen = reset ? ++generation : generation;
  const f = filters();
  if (reset) {
    cursor = null;
    tbody.replaceChildren();
    message.replaceChildren();
    showSummary(f, gen);
  }
  more.hidden = true;
  message.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  try {
    const page = await api.predictions({ model: f.model, flagged: f.flagged, feedback: f.feedback, since: f.since, limit: PAGE_SIZE, cursor: reset ? undefined : cursor });
    if (gen !== generation) return;
    tbody.append(...page.predictions.map(row));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
    message.replaceChildren(
      tbody.children.length ? "" : h("p", { class: "hint empty" }, "No stored predictions match these filters.")
    );
  } catch (err) {
    if (gen === generation) message.replaceChildren(errorBox(err, { retry: () => loadPage(reset) }));
  }
}

async function openCard(id) {
  const body = dialog.querySelector(".dialog-body");
  body.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  if (!dialog.open) dialog.showModal();
  const seen = state.seen.get(id);
  if (seen) {
    body.replaceChildren(predictionCard(seen.pred, { ...seen.ctx, timings: null }));
    return;
  }
  try {
    const pred = await api.prediction(id);
    body.replaceChildren(predictionCard(pred, { model: modelInfo(pred.model) }));
  } catch (err) {
    body.replaceChildren(errorBox(err));
  }
}

function build() {
  const model = h("select", { name: "model", id: "history-model" });
  form = h(
    "form",
    { class: "filters", id: "history-filters", onsubmit: (e) => (e.preventDefault(), loadPage(true)), onchange: () => loadPage(true) },
    h("label", { for: "history-model" }, "Model "),
    model,
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "flagged", id: "history-flagged" }), " Flagged only"),
    h("label", { for: "history-feedback" }, "Feedback "),
    h("select", { name: "feedback", id: "history-feedback" }, FEEDBACK.map(([v, label]) => h("option", { value: v }, label))),
    h("label", { for: "history-window" }, "Time window "),
    h("select", { name: "window", id: "history-window" }, WINDOWS.map(([v, label]) => h("option", { value: v, selected: v === "24h" }, label))),
    h("button", { type: "submit" }, "Refresh")
  );
  summary = h("p", { class: "summary", id: "history-summary", "aria-live": "polite" });
  tbody = h("tbody", { id: "history-rows" });
  more = h("button", { type: "button", class: "secondary", id: "history-more", hidden: true, onclick: () => loadPage(false) }, "Load older predictions");
  message = h("div", { class: "history-message" });
  dialog = h(
    "dialog",
    { class: "card-dialog", "aria-label": "Stored prediction" },
    h("div", { class: "dialog-bar" }, h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Close")),
    h("div", { class: "dialog-body" })
  );
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog) dialog.close(); // a click on the backdrop
  });
  root.append(
    h("h1", { id: "h-history" }, "History"),
    form,
    summary,
    h(
      "table",
      { class: "history" },
      h("caption", { class: "visually-hidden" }, "Stored predictions, newest first"),
      h(
        "thead",
        {},
        h("tr", {}, ["Time", "Model", "Class", "Trust", "State", "Feedback"].map((t) => h("th", { scope: "col" }, t)))
      ),
      tbody
    ),
    message,
    more,
    dialog
  );
}

async function fillModels() {
  const select = form.elements.model;
  const current = select.value;
  try {
    await loadModels();
  } catch (err) {
    message.replaceChildren(errorBox(err, { retry: () => historyPage.show(root) }));
    return false;
  }
  select.replaceChildren(h("option", { value: "" }, "All models"), ...state.models.map((m) => h("option", { value: m.name }, m.name)));
  select.value = current;
  return true;
}

export const historyPage = {
  async show(section) {
    if (!root) {
      root = section;
      build();
    }
    if (await fillModels()) loadPage(true);
  },
};
