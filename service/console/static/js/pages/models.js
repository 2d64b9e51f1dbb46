// Models: one card per served model, with its detector, its recent flag rate and latency, and the
// flag's quality on the predictions users gave feedback on.

import { api } from "../api.js";
import { errorBox, h, percent, seconds } from "../dom.js";
import { loadModels, state } from "../state.js";

const WINDOW = "24h";

let root;
let grid;

function fact(term, value, cls) {
  return [h("dt", {}, term), h("dd", { class: cls }, value ?? "–")];
}

function calibration(det) {
  if (!det) return "–";
  const source = det.calibration?.source ?? det.calibration_inputs ?? null;
  const n = det.calibration?.n ?? det.n_calibration;
  return [source, n !== undefined ? `${n} images` : null].filter(Boolean).join(", ");
}

// The flag's quality over the window, from /v1/stats' flag_quality (null: no labelled predictions).
function flagQuality(q) {
  if (!q) return h("p", { class: "hint" }, `No feedback on predictions of the last ${WINDOW}: post "correct" or "wrong" on a result card.`);
  const ratio = (v) => (v === null || v === undefined ? "–" : percent(v));
  const [low, high] = q.false_alarm_interval;
  const alarms = `${ratio(q.false_alarm_rate)} of ${q.correct} correct (95%: ${percent(low)}–${percent(high)})`;
  return h(
    "dl",
    { class: "facts" },
    fact("Labelled", String(q.labelled), "fq-labelled"),
    fact("Precision", `${ratio(q.precision)} of ${q.flagged} flagged were wrong`, "fq-precision"),
    fact("Recall", `${ratio(q.recall)} of ${q.wrong} wrong were flagged`, "fq-recall"),
    fact("False alarms", alarms, `fq-false-alarms${q.false_alarms_above_alpha ? " warn" : ""}`),
    ...(q.false_alarms_above_alpha ? [h("dt", {}, ""), h("dd", { class: "warn" }, `above alpha ${q.alpha} beyond chance: the calibration no longer fits this traffic`)] : [])
  );
}

function modelCard(m) {
  const det = m.detector;
  const recent = h("dd", { class: "recent-rate" }, "…");
  const latency = h("dd", { class: "latency" }, "…");
  const quality = h("div", { class: "flag-quality-body" }, "…");
  const card = h(
    "article",
    { class: "card model-card", dataset: { model: m.name } },
    h("header", { class: "card-head" }, h("h2", {}, m.name), h("p", { class: "card-meta" }, `v${m.version} · ${m.architecture} · ${m.ready ? "ready" : "loading"}`)),
    m.description ? h("p", {}, m.description) : null,
    h(
      "dl",
      { class: "facts" },
      fact("Data set", m.dataset),
      fact("Test accuracy", m.metrics?.test_accuracy !== undefined ? percent(m.metrics.test_accuracy, 2) : "–", "accuracy"),
      fact("Input", `${m.input_shape.join(" × ")}, ${m.class_names.length} classes`),
      fact("Detector", det ? det.kind : "none", "detector-kind"),
      fact("Views", det?.views?.length ? det.views.join(", ") + (det.fusion ? ` (fused by ${det.fusion})` : "") : "one score (no views)", "views"),
      fact("Calibration", calibration(det), "calibration"),
      fact("Alpha", det ? String(det.alpha) : "–", "alpha"),
      h("dt", {}, `Flag rate (${WINDOW})`),
      recent,
      h("dt", {}, "p50 latency"),
      latency
    ),
    h("section", { class: "flag-quality" }, h("h3", {}, `Flag quality (${WINDOW}, from feedback)`), quality)
  );
  api
    .stats({ model: m.name, window: WINDOW })
    .then((st) => {
      recent.textContent = st.flag_rate === null || st.flag_rate === undefined ? `no predictions` : `${percent(st.flag_rate)} of ${st.count}`;
      const p50 = st.latency_quantiles?.p50;
      latency.textContent = p50 === undefined || p50 === null ? "no requests yet" : `${seconds(p50)} (since start)`;
      quality.replaceChildren(flagQuality(st.flag_quality?.[m.name]));
    })
    .catch((err) => {
      recent.replaceChildren(errorBox(err));
      latency.textContent = "–";
      quality.textContent = "–";
    });
  return card;
}

async function render() {
  grid.replaceChildren(h("p", { class: "hint" }, "Loading…"));
  try {
    await loadModels(true);
  } catch (err) {
    grid.replaceChildren(errorBox(err, { retry: render }));
    return;
  }
  grid.replaceChildren(...state.models.map(modelCard));
}

export const modelsPage = {
  show(section) {
    if (!root) {
      root = section;
      grid = h("div", { class: "model-grid", id: "model-grid" });
      root.append(h("h1", { id: "h-models" }, "Models"), grid);
    }
    render();
  },
};
