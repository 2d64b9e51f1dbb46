// API key: asked for when the server requires one, kept in sessionStorage, sent as X-API-Key.

import { api, getKey, serverMode, setKey } from "../api.js";
import { errorBox, h } from "../dom.js";
import { loadModels } from "../state.js";

let root;
let input;
let mode;
let feedback;
let returnTo = "#/classify";

function describeMode() {
  const key = getKey();
  if (serverMode.keysRequired === true) {
    mode.textContent = key
      ? "This server requires an API key. This tab sends the key below with every request."
      : "This server requires an API key. Enter yours to use the console.";
  } else if (serverMode.keysRequired === false) {
    mode.textContent = key
      ? "This server is open: it does not check keys. This tab still sends the key below."
      : "This server is open: no key is needed.";
  } else {
    mode.textContent = "Checking whether this server requires an API key…";
  }
}

async function save(e) {
  e.preventDefault();
  const value = input.value.trim();
  if (!value) {
    feedback.replaceChildren(errorBox({ message: "The key is empty.", hint: "Paste the key that `gga keys create` printed (it starts with gga_)." }));
    return;
  }
  setKey(value);
  feedback.replaceChildren(h("p", { class: "hint" }, "Checking the key…"));
  try {
    await api.models();
    await loadModels(true);
    input.value = "";
    feedback.replaceChildren(h("p", { class: "ok", role: "status" }, "Key accepted. It is kept in this tab only and forgotten when the tab closes."));
    describeMode();
    if (returnTo && returnTo !== "#/key") location.hash = returnTo;
  } catch (err) {
    feedback.replaceChildren(errorBox(err));
  }
}

function forget() {
  setKey("");
  feedback.replaceChildren(h("p", { class: "ok", role: "status" }, "Key forgotten."));
  describeMode();
}

export const keyPage = {
  /** Show the page; `message` is a 401 message to show, `from` the page to return to. */
  show(section, { message, from } = {}) {
    if (!root) {
      root = section;
      input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false", placeholder: "gga_…" });
      mode = h("p", { class: "mode", id: "key-mode" });
      feedback = h("div", { class: "key-feedback", id: "key-feedback", "aria-live": "polite" });
      root.append(
        h("h1", { id: "h-key" }, "API key"),
        mode,
        h(
          "form",
          { class: "key-form", id: "key-form", onsubmit: save },
          h("label", { for: "api-key" }, "API key"),
          input,
          h("button", { type: "submit" }, "Use this key"),
          h("button", { type: "button", class: "secondary", onclick: forget }, "Forget key")
        ),
        feedback,
        h("p", { class: "hint" }, "The key is kept in this tab's sessionStorage, never in a URL, and sent as the X-API-Key header.")
      );
    }
    if (from) returnTo = from;
    describeMode();
    if (message) feedback.replaceChildren(errorBox({ message, hint: "Enter a valid API key (an operator creates one with `gga keys create`)." }));
    else if (serverMode.keysRequired === null) api.models().then(describeMode, describeMode);
    input.focus();
  },
};
