// The console's entry: a hash router over four pages, and the key prompt on any 401.

import { getKey, onAuthChange, serverMode } from "./api.js";
import { classifyPage } from "./pages/classify.js";
import { historyPage } from "./pages/history.js";
import { keyPage } from "./pages/key.js";
import { modelsPage } from "./pages/models.js";

const PAGES = { classify: classifyPage, history: historyPage, models: modelsPage, key: keyPage };
let current = null;
let lastPage = "#/classify";

function pageName() {
  const name = location.hash.replace(/^#\/?/, "").split("/")[0];
  return PAGES[name] ? name : "classify";
}

function route(extra = {}) {
  const name = pageName();
  for (const key of Object.keys(PAGES)) {
    document.getElementById(`page-${key}`).hidden = key !== name;
  }
  document.querySelectorAll("nav a[data-page]").forEach((a) => {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · gga-serve console`;
  if (name !== "key") lastPage = `#/${name}`;
  const section = document.getElementById(`page-${name}`);
  PAGES[name].show(section, name === "key" ? { from: lastPage, ...extra } : undefined);
  if (current !== null && current !== name) document.getElementById("main").focus({ preventScroll: true });
  current = name;
}

function showKeyState() {
  const el = document.getElementById("key-state");
  if (getKey()) el.textContent = "(set)";
  else el.textContent = serverMode.keysRequired ? "(needed)" : "";
}

onAuthChange(({ keysRequired, message }) => {
  showKeyState();
  if (keysRequired && message && pageName() !== "key") {
    // A 401 anywhere: ask for a key, then come back.
    lastPage = `#/${pageName()}`;
    history.replaceState(null, "", "#/key");
    route({ message });
  } else if (keysRequired && message) {
    keyPage.show(document.getElementById("page-key"), { message });
  }
});

window.addEventListener("hashchange", () => route());
showKeyState();
route();
