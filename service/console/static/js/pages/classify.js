// Classify: pick a model, drop / choose / paste images, one card per image.

import { api } from "../api.js";
import { predictionCard } from "../card.js";
import { errorBox, h } from "../dom.js";
import { loadModels, modelInfo, state } from "../state.js";

const ACCEPTED = ["image/png", "image/jpeg"];
const MAX_IN_FLIGHT = 4;

let root;
let select;
let results;
let modelNote;
let queue = [];
let inFlight = 0;

function isImage(file) {
  if (ACCEPTED.includes(file.type)) return true;
  return !file.type && /\.(png|jpe?g)$/i.test(file.name || "");
}

function pending(file) {
  const progress = h("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
  const status = h("p", { class: "pending-status" }, "Waiting…");
  const card = h(
    "article",
    { class: "card pending", "aria-busy": "true", "aria-label": `Classifying ${file.name}` },
    h("header", { class: "card-head" }, h("h3", {}, file.name || "pasted image"), h("p", { class: "card-meta" }, `${(file.size / 1024).toFixed(1)} KB`)),
    status,
    progress
  );
  return { card, progress, status };
}

function failed(slot, file, err, retry) {
  const card = h(
    "article",
    { class: "card failed", "aria-label": `Could not classify ${file.name}` },
    h("header", { class: "card-head" }, h("h3", {}, file.name || "pasted image"), h("p", { class: "card-meta" }, "not classified")),
    errorBox(err, { retry })
  );
  slot.replaceWith(card);
  return card;
}

async function classify(file, model, slot) {
  const { card, progress, status } = pending(file);
  slot.replaceWith(card);
  const started = performance.now();
  status.textContent = "Uploading…";
  let apiMs = 0;
  try {
    const pred = await api.predict(model, file, {
      onUpload: (f) => {
        progress.value = Math.round(100 * f);
        status.textContent = `Uploading ${Math.round(100 * f)}%`;
      },
      onSent: () => {
        progress.removeAttribute("value"); // indeterminate while the server computes
        status.textContent = "Computing the trust score…";
      },
    });
    apiMs = performance.now() - started;
    const fileUrl = URL.createObjectURL(file);
    const ctx = { model: modelInfo(model), fileName: file.name, fileUrl, timings: { api: apiMs, drawn: 0 } };
    const done = predictionCard(pred, ctx);
    card.replaceWith(done);
    // "On screen" counts until every picture of the card is decoded and drawn.
    await Promise.all([...done.querySelectorAll("img")].map((img) => img.decode().catch(() => null)));
    await new Promise((r) => requestAnimationFrame(() => r()));
    ctx.timings.drawn = performance.now() - started;
    done.dataset.apiMs = apiMs.toFixed(1);
    done.dataset.drawnMs = ctx.timings.drawn.toFixed(1);
    const timing = done.querySelector(".timings");
    if (timing) timing.textContent = `API ${Math.round(apiMs)} ms · on screen ${Math.round(ctx.timings.drawn)} ms`;
    state.seen.set(pred.id, { pred, ctx });
  } catch (err) {
    // Each file goes alone, so the server's "image 0" is this file.
    if (err.message?.startsWith("image 0")) err.message = err.message.replace(/^image 0/, file.name);
    const transient = err.status === 0 || err.status === 429 || err.status >= 500;
    const retrySlot = failed(card, file, err, transient ? () => enqueue(file, model, retrySlot) : null);
  }
}

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const { file, model, slot } = queue.shift();
    inFlight++;
    classify(file, model, slot).finally(() => {
      inFlight--;
      pump();
    });
  }
}

function enqueue(file, model, slot) {
  queue.push({ file, model, slot });
  pump();
}

/** Classify files with the selected model; refused files get a card saying why. */
export function classifyFiles(files) {
  const model = select.value;
  const batch = document.createDocumentFragment(); // newest drop first, its files in order
  const slots = files.map(() => batch.appendChild(h("div", { class: "slot" })));
  results.prepend(batch);
  for (const [i, file] of files.entries()) {
    const slot = slots[i];
    if (!isImage(file)) {
      failed(slot, file, {
        message: `${file.name || "This file"} is not a PNG or JPEG image (its type is ${file.type || "unknown"}).`,
        hint: "Choose PNG or JPEG files: photos, screenshots or scans saved in one of those formats.",
      });
      continue;
    }
    if (!model) {
      failed(slot, file, { message: "No model is selected.", hint: "Wait for the model list to load, or reload the page." });
      continue;
    }
    enqueue(file, model, slot);
  }
}

function describeModel() {
  const m = modelInfo(select.value);
  if (!m) {
    modelNote.textContent = "";
    return;
  }
  const acc = m.metrics?.test_accuracy;
  const alpha = m.detector?.alpha;
  modelNote.textContent = [
    `${m.dataset}, ${m.class_names.length} classes, input ${m.input_shape.join(" × ")}`,
    acc !== undefined ? `test accuracy ${(100 * acc).toFixed(1)}%` : null,
    alpha !== undefined ? `flags below trust ${alpha}` : null,
  ]
    .filter(Boolean)
    .join(" · ");
}

function build() {
  select = h("select", { id: "model-select", name: "model", onchange: describeModel });
  modelNote = h("p", { class: "model-note", id: "model-note" });
  const input = h("input", {
    id: "file-input",
    type: "file",
    accept: ACCEPTED.join(","),
    multiple: true,
    class: "visually-hidden",
    tabindex: -1,
    onchange: (e) => {
      classifyFiles([...e.target.files]);
      e.target.value = "";
    },
  });
  const drop = h(
    "label",
    { class: "dropzone", for: "file-input", id: "dropzone" },
    input,
    h("span", { class: "drop-big" }, "Drop PNG or JPEG images here"),
    h("span", { class: "drop-small" }, "or press Enter to choose files, or paste an image (Ctrl+V)")
  );
  drop.tabIndex = 0;
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classifyFiles([...(e.dataTransfer?.files || [])]);
  });
  document.addEventListener("paste", (e) => {
    if (root.hidden) return;
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) {
      e.preventDefault();
      classifyFiles(files);
    }
  });
  results = h("div", { class: "results", id: "results", "aria-live": "polite" });
  const clear = h("button", { type: "button", class: "secondary", onclick: () => results.replaceChildren() }, "Clear results");
  root.append(
    h("h1", { id: "h-classify" }, "Classify"),
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "model-select" }, "Model "),
      select,
      clear
    ),
    modelNote,
    drop,
    results
  );
}

async function fillModels() {
  try {
    await loadModels();
  } catch (err) {
    modelNote.replaceChildren(errorBox(err, { retry: () => fillModels() }));
    return;
  }
  const current = select.value;
  select.replaceChildren(...state.models.map((m) => h("option", { value: m.name }, `${m.name} (v${m.version})`)));
  select.value = current && modelInfo(current) ? current : state.defaultModel;
  describeModel();
}

export const classifyPage = {
  show(section) {
    if (!root) {
      root = section;
      build();
    }
    fillModels();
  },
};
