// One prediction as a card: what the model saw, what it said, how far to trust it, and why.

import { api } from "./api.js";
import { csmHeatmap, probabilityChart, trustScale } from "./charts.js";
import { errorBox, h, percent, score, seconds, when } from "./dom.js";

const png = (b64) => `data:image/png;base64,${b64}`;

function stateLine(pred, alpha) {
  const flagged = pred.flagged;
  const vs = alpha !== null && alpha !== undefined ? ` (alpha ${alpha})` : "";
  return h(
    "p",
    { class: `card-state ${flagged ? "flagged" : "trusted"}`, dataset: { state: flagged ? "flagged" : "trusted" } },
    h("span", { class: "state-icon", "aria-hidden": "true" }, flagged ? "⚠" : "✓"),
    h("strong", { class: "state-word" }, flagged ? "Flagged" : "Trusted"),
    flagged
      ? ` — trust ${score(pred.trust_score)} is below the model's threshold${vs}: do not rely on this label without a look.`
      : ` — trust ${score(pred.trust_score)} is at or above the model's threshold${vs}.`
  );
}

function viewsTable(views, alpha, flagged) {
  const entries = Object.entries(views || {});
  if (!entries.length) return null;
  const lowest = Math.min(...entries.map(([, v]) => v.p_value));
  return h(
    "section",
    { class: "views" },
    h("h4", {}, "Each view's p-value"),
    h(
      "table",
      { class: "views-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "View"), h("th", { scope: "col" }, "p-value"), h("th", { scope: "col" }, "Verdict"))),
      h(
        "tbody",
        {},
        entries.map(([name, v]) => {
          const below = alpha !== null && alpha !== undefined && v.p_value < alpha;
          return h(
            "tr",
            { class: `view-row${below ? " below" : ""}${v.p_value === lowest ? " lowest" : ""}`, dataset: { view: name } },
            h("th", { scope: "row" }, v.title ? `${v.title} ` : "", h("span", { class: "view-name" }, `(${name})`)),
            h("td", { class: "view-p" }, score(v.p_value)),
            h("td", { class: "view-verdict" }, below ? (flagged ? "below alpha: raises the flag" : "below alpha on its own") : v.p_value === lowest ? "lowest" : "")
          );
        })
      )
    )
  );
}

function saliencyStrip(pred, names) {
  const sal = pred.saliency;
  if (!sal) return null;
  const predictedName = pred.class_name;
  const figures = [
    { label: pred.label, name: predictedName, p: pred.probabilities[pred.label], map: sal.predicted, role: "predicted" },
    ...(sal.others || []).map((o) => ({ label: o.label, name: o.class_name, p: o.probability, map: o.map, role: "other" })),
  ];
  return h(
    "section",
    { class: "saliency" },
    h("h4", {}, "Sign maps of the input gradient"),
    h(
      "div",
      { class: "maps" },
      figures.map((f) =>
        h(
          "figure",
          { class: `sign-map ${f.role}` },
          h("img", {
            class: "sign-map-img pixelated",
            src: png(f.map),
            width: 72,
            height: 72,
            alt: `Sign map for class ${f.name} (${percent(f.p)}): white where raising a pixel raises this class's loss, black where it lowers it, grey where it does not matter`,
          }),
          h("figcaption", {}, h("span", { class: "map-class" }, f.name), h("span", { class: "map-p" }, f.role === "predicted" ? "predicted" : percent(f.p)))
        )
      )
    ),
    h("p", { class: "hint" }, "Black −1, grey 0, white +1. A trusted prediction's maps of other classes resemble each other; disagreeing maps are what GGA flags.")
  );
}

function feedbackText(feedback) {
  if (!feedback) return "No feedback yet.";
  return feedback.correct ? "Marked correct." : "Marked wrong.";
}

// "Correct" / "Wrong" on the card: posts feedback, which the flag's live quality is measured on.
function feedbackBar(pred) {
  const status = h("span", { class: "feedback-status", "aria-live": "polite" }, feedbackText(pred.feedback));
  const send = async (correct) => {
    status.textContent = "Sending…";
    try {
      const stored = await api.feedback(pred.id, { correct });
      pred.feedback = { correct: stored.correct, label: stored.label ?? null };
      status.replaceChildren(feedbackText(pred.feedback));
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  };
  return h(
    "span",
    { class: "feedback", dataset: { id: pred.id } },
    "Was this right? ",
    h("button", { type: "button", class: "secondary feedback-correct", onclick: () => send(true) }, "✓ Correct"),
    " ",
    h("button", { type: "button", class: "secondary feedback-wrong", onclick: () => send(false) }, "✗ Wrong"),
    " ",
    status
  );
}

/**
 * Build the card of a prediction.
 * @param {object} pred - A prediction (predict answer, or a stored one without pictures).
 * @param {object} ctx - {model: model info or null, fileName, fileUrl, timings: {api, drawn}}
 * @returns {HTMLElement}
 */
export function predictionCard(pred, ctx = {}) {
  const model = ctx.model || null;
  const names = model?.class_names || [];
  const alpha = model?.detector?.alpha ?? null;
  const input = pred.saliency?.input;
  const shape = model?.input_shape || [];
  const seen = shape.length === 3 ? `${shape[1]} × ${shape[2]} ${shape[0] === 1 ? "grey" : "colour"}` : "";
  const card = h(
    "article",
    { class: `card prediction ${pred.flagged ? "is-flagged" : "is-trusted"}`, dataset: { id: pred.id }, "aria-label": `Prediction ${pred.class_name}` },
    h(
      "header",
      { class: "card-head" },
      h("h3", { class: "card-label" }, pred.class_name),
      h("p", { class: "card-meta" }, [ctx.fileName, `${pred.model} v${pred.model_version}`, when(pred.created_at)].filter(Boolean).join(" · "))
    ),
    stateLine(pred, alpha),
    h(
      "div",
      { class: "card-grid" },
      h(
        "section",
        { class: "seen" },
        h("h4", {}, "What the model saw"),
        input
          ? h("img", { class: "model-input pixelated", src: png(input), width: 112, height: 112, alt: `The image as the model saw it${seen ? `: ${seen}` : ""}, classified as ${pred.class_name}` })
          : h("p", { class: "hint" }, "The service does not store images; classify the file again to see it."),
        ctx.fileUrl ? h("img", { class: "upload-thumb", src: ctx.fileUrl, alt: `The uploaded file ${ctx.fileName || ""}`, width: 56, height: 56 }) : null
      ),
      h(
        "section",
        { class: "probs" },
        h("h4", {}, "Prediction"),
        h("p", { class: "big" }, h("span", { class: "label-text" }, pred.class_name), " ", h("span", { class: "prob" }, percent(pred.probabilities[pred.label]))),
        probabilityChart(pred.probabilities, names, pred.label)
      ),
      h(
        "section",
        { class: "trust" },
        h("h4", {}, "Trust score"),
        h("p", { class: "big" }, h("span", { class: "card-trust", dataset: { value: pred.trust_score } }, score(pred.trust_score)), alpha !== null ? h("span", { class: "alpha" }, ` alpha ${alpha}`) : null),
        trustScale(pred.trust_score, alpha),
        viewsTable(pred.explanation?.views, alpha, pred.flagged) ||
          (pred.explanation ? h("p", { class: "hint no-views" }, "This model's detector reports one fused score (no per-view p-values).") : null)
      )
    ),
    h(
      "div",
      { class: "card-pictures" },
      saliencyStrip(pred, names),
      pred.explanation
        ? h(
            "section",
            { class: "csm-section" },
            h("h4", {}, "Cosine similarity of the classes' sign maps (CSM)"),
            csmHeatmap(pred.explanation.csm, pred.explanation.classes, names, pred.label)
          )
        : null
    ),
    !pred.explanation && !pred.saliency ? h("p", { class: "hint" }, "Sign maps and the CSM are computed per request and not stored; classify the image again to see them.") : null,
    h(
      "footer",
      { class: "card-foot" },
      h("span", {}, "id ", h("code", {}, pred.id)),
      pred.id ? feedbackBar(pred) : null,
      ctx.timings ? h("span", { class: "timings" }, `API ${seconds(ctx.timings.api / 1000)} · on screen ${seconds(ctx.timings.drawn / 1000)}`) : null
    )
  );
  return card;
}
