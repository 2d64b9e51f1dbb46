// The card's pictures, drawn as SVG: class probabilities, the trust scale and the CSM heatmap.

import { h, percent, s, score } from "./dom.js";

const BAR_ROWS = 10;

/**
 * Horizontal bars of the most probable classes, the predicted one highlighted.
 * @param {number[]} probabilities
 * @param {string[]} names
 * @param {number} predicted - Class index.
 */
export function probabilityChart(probabilities, names, predicted) {
  const order = probabilities
    .map((p, i) => [p, i])
    .sort((a, b) => b[0] - a[0])
    .slice(0, BAR_ROWS);
  const rowH = 18;
  const labelW = 104;
  const barW = 150;
  const width = labelW + barW + 56;
  const height = order.length * rowH + 4;
  const summary = order.map(([p, i]) => `${names[i] ?? i} ${percent(p)}`).join(", ");
  const chart = s(
    "svg",
    {
      class: "prob-chart",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `Class probabilities, most probable first: ${summary}`,
    },
    order.map(([p, i], row) => {
      const y = row * rowH + 2;
      const mine = i === predicted;
      return s(
        "g",
        { class: mine ? "bar predicted" : "bar" },
        s("text", { x: labelW - 6, y: y + 12, "text-anchor": "end", class: "bar-label" }, names[i] ?? String(i)),
        s("rect", { x: labelW, y: y + 2, width: barW, height: rowH - 6, class: "bar-track" }),
        s("rect", { x: labelW, y: y + 2, width: Math.max(1, barW * p), height: rowH - 6, class: "bar-fill" }),
        s("text", { x: labelW + barW + 6, y: y + 12, class: "bar-value" }, percent(p))
      );
    })
  );
  const rest = probabilities.length - order.length;
  return h(
    "figure",
    { class: "chart" },
    chart,
    h("figcaption", {}, rest > 0 ? `Top ${order.length} of ${probabilities.length} classes` : "Class probabilities")
  );
}

// The scale is a square root: alpha (usually 0.05) and the flagged tail get room to be seen.
const scaleX = (v, x0, w) => x0 + w * Math.sqrt(Math.min(1, Math.max(0, v)));

/**
 * The trust score on a 0-1 scale with the model's alpha marked and the flagged zone shaded.
 * @param {number} trust
 * @param {number|null} alpha
 */
export function trustScale(trust, alpha) {
  const width = 320;
  const x0 = 12;
  const w = width - 2 * x0;
  const y = 26;
  const ticks = [0, 0.01, 0.05, 0.25, 0.5, 1].filter((t) => t !== alpha);
  const flagged = alpha !== null && trust < alpha;
  const label = `Trust score ${score(trust)} on a scale from 0 to 1` + (alpha !== null ? `; alpha ${alpha}, ${flagged ? "below" : "above"} it` : "");
  return s(
    "svg",
    { class: "trust-scale", viewBox: `0 0 ${width} 62`, width, height: 62, role: "img", "aria-label": label },
    s("rect", { x: x0, y, width: w, height: 10, class: "scale-track" }),
    alpha !== null ? s("rect", { x: x0, y, width: scaleX(alpha, x0, w) - x0, height: 10, class: "scale-flag-zone" }) : null,
    ticks.map((t) =>
      s(
        "g",
        { class: "tick" },
        s("line", { x1: scaleX(t, x0, w), x2: scaleX(t, x0, w), y1: y + 10, y2: y + 14 }),
        s("text", { x: scaleX(t, x0, w), y: y + 25, "text-anchor": "middle" }, String(t))
      )
    ),
    alpha !== null
      ? s(
          "g",
          { class: "alpha-mark" },
          s("line", { x1: scaleX(alpha, x0, w), x2: scaleX(alpha, x0, w), y1: y - 6, y2: y + 16 }),
          s("text", { x: scaleX(alpha, x0, w), y: y + 25, "text-anchor": "middle" }, `α ${alpha}`)
        )
      : null,
    s(
      "g",
      { class: flagged ? "trust-mark flagged" : "trust-mark" },
      s("path", { d: `M ${scaleX(trust, x0, w)} ${y - 1} l -6 -10 h 12 z` }),
      s("text", { x: Math.min(width - 30, Math.max(30, scaleX(trust, x0, w))), y: 10, "text-anchor": "middle" }, score(trust))
    )
  );
}

// Diverging colours for cosines in [-1, 1]: blue for disagreeing maps, white 0, red agreeing.
const NEG = [33, 102, 172];
const MID = [247, 247, 247];
const POS = [178, 24, 43];
function cosineColour(v) {
  const t = Math.min(1, Math.abs(v));
  const end = v < 0 ? NEG : POS;
  const c = MID.map((m, k) => Math.round(m + (end[k] - m) * t));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * The class-by-class cosine similarity matrix of the sign maps, with class names on both axes.
 * Hover or focus a cell (arrow keys move) to read its value.
 * @param {number[][]} csm
 * @param {number[]} classes - Class index of each row.
 * @param {string[]} names
 * @param {number} predicted
 */
export function csmHeatmap(csm, classes, names, predicted) {
  const k = csm.length;
  const cell = k <= 10 ? 22 : Math.max(6, Math.floor(240 / k));
  const label = 96;
  const width = label + k * cell + 60; // room for the last rotated column label
  const height = label + k * cell + 8;
  const nameOf = (i) => names[classes[i]] ?? String(classes[i]);
  const readout = h("p", { class: "csm-readout", "aria-live": "polite" }, "Hover or focus a cell to read its cosine.");
  let focus = [0, 0];
  const cells = [];
  const describe = (i, j) => `${nameOf(i)} × ${nameOf(j)}: cosine ${csm[i][j].toFixed(3)}`;
  const show = (i, j) => {
    focus = [i, j];
    cells.forEach((c) => c.classList.remove("active"));
    cells[i * k + j].classList.add("active");
    readout.textContent = describe(i, j);
  };
  const grid = s("g", { transform: `translate(${label}, ${label})` });
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const rect = s(
        "rect",
        {
          class: "csm-cell",
          x: j * cell,
          y: i * cell,
          width: cell - 1,
          height: cell - 1,
          fill: cosineColour(csm[i][j]),
          dataset: { row: i, col: j, value: csm[i][j] },
        },
        s("title", {}, describe(i, j))
      );
      rect.addEventListener("mouseenter", () => show(i, j));
      cells.push(rect);
      grid.append(rect);
    }
  }
  const axis = [];
  for (let i = 0; i < k; i++) {
    const mine = classes[i] === predicted;
    axis.push(
      s("text", { class: mine ? "axis-label predicted" : "axis-label", x: label - 4, y: label + i * cell + cell / 2 + 4, "text-anchor": "end" }, nameOf(i)),
      s(
        "text",
        {
          class: mine ? "axis-label predicted" : "axis-label",
          transform: `translate(${label + j0(i, cell) + 4}, ${label - 4}) rotate(-55)`,
        },
        nameOf(i)
      )
    );
  }
  const svg = s(
    "svg",
    {
      class: "csm",
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      tabindex: 0,
      "aria-label": `Cosine similarity matrix of the ${k} classes' sign maps; use the arrow keys to read each cell`,
    },
    axis,
    grid
  );
  svg.addEventListener("focus", () => show(...focus));
  svg.addEventListener("keydown", (e) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const move = moves[e.key];
    if (!move) return;
    e.preventDefault();
    show(Math.min(k - 1, Math.max(0, focus[0] + move[0])), Math.min(k - 1, Math.max(0, focus[1] + move[1])));
  });
  const legend = h(
    "p",
    { class: "csm-legend" },
    h("span", { class: "swatch neg" }),
    " −1 opposite maps ",
    h("span", { class: "swatch mid" }),
    " 0 ",
    h("span", { class: "swatch pos" }),
    " +1 same map"
  );
  return h("figure", { class: "chart csm-figure" }, svg, readout, legend);
}

function j0(i, cell) {
  return i * cell + cell / 2 - 4;
}
