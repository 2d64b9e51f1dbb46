// Small DOM helpers: build elements without innerHTML (no markup injection from API strings).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("p", {class: "x"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function percent(p, digits = 1) {
  if (p === null || p === undefined || Number.isNaN(p)) return "–";
  return `${(100 * p).toFixed(digits)}%`;
}

/** A trust score or p-value as shown everywhere: four decimals. */
export function score(x) {
  // null: a model served without a fitted detector gives no trust score.
  if (x === null || x === undefined) return "none";
  return Number(x).toFixed(4);
}

export function seconds(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return x < 1 ? `${Math.round(1000 * x)} ms` : `${x.toFixed(2)} s`;
}

export function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** A message box: what happened, what to do. */
export function errorBox(err, { retry } = {}) {
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", { class: "error-what" }, err.message || String(err)),
    err.hint ? h("p", { class: "error-hint" }, err.hint) : null,
    retry ? h("button", { type: "button", class: "secondary", onclick: retry }, "Try again") : null
  );
}
