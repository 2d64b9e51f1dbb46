// What the pages share: the served models and the full cards classified in this tab.

import { api } from "./api.js";

export const state = {
  /** @type {object[]} */ models: [],
  defaultModel: "",
  /** Full predictions (with pictures) classified in this tab, by id: History opens them. */
  seen: new Map(),
};

let loading = null;

/** Load the served models once (again after `force`, e.g. when a key was entered). */
export function loadModels(force = false) {
  if (!loading || force) {
    loading = api.models().then((data) => {
      state.models = data.models;
      state.defaultModel = data.default_model;
      return state.models;
    });
    loading.catch(() => {
      loading = null; // let the next page try again
    });
  }
  return loading;
}

export function modelInfo(name) {
  return state.models.find((m) => m.name === name) || null;
}
