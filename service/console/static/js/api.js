// Every call the console makes to the v1 API: the key header, timeouts, upload progress, and
// errors turned into a message saying what happened and what to do.

import { checkAnswer } from "./contract.js";

const KEY_STORAGE = "gga.apiKey";
const DEFAULT_TIMEOUT_MS = 30_000;
// The server's own request deadline is 30 s by default; a predict answer later than this is
// not coming, and the card must say so rather than spin.
const PREDICT_TIMEOUT_MS = 90_000;

/** The API key of this tab (sessionStorage: gone when the tab closes, never in a URL). */
export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key.trim());
  else sessionStorage.removeItem(KEY_STORAGE);
  authListeners.forEach((fn) => fn({ keySet: Boolean(key) }));
}

/** Whether the server wants keys: null until known, then true or false. */
export const serverMode = { keysRequired: null };
const authListeners = [];
/** Call `fn({keySet, keysRequired, message})` whenever the key or the server's answer changes. */
export function onAuthChange(fn) {
  authListeners.push(fn);
}

/** An API call that failed: `message` says what happened, `hint` what to do. */
export class ApiError extends Error {
  constructor({ status, code = "", message, hint, retryAfter = null }) {
    super(message);
    this.status = status;
    this.code = code;
    this.hint = hint;
    this.retryAfter = retryAfter;
  }
}

function hintFor(status, code, retryAfter) {
  const wait = retryAfter ? `${retryAfter} s` : "a moment";
  switch (status) {
    case 0:
      return "Check that gga serve is still running and reachable from this browser, then try again.";
    case 401:
      return "Enter a valid API key on the API key page (an operator creates one with `gga keys create`).";
    case 403:
      return "This key may not do this (a read key cannot classify): enter a key with the predict scope on the API key page.";
    case 404:
      return "Reload the page: the model or prediction may no longer be served.";
    case 413:
      return "Send a smaller image (fewer pixels or a smaller file), or fewer images at once.";
    case 415:
    case 422:
      return code === "invalid_image"
        ? "Choose a PNG or JPEG file that opens in an image viewer."
        : "Check the input and try again.";
    case 429:
      return `This key sent too many requests: wait ${wait} and try again.`;
    case 503:
      return code === "store_unavailable"
        ? `The server cannot reach its database: wait ${wait} and try again.`
        : `The server is busy or starting: wait ${wait} and try again.`;
    default:
      return status >= 500
        ? "The server failed. Try again; if it keeps failing, the operator should read the server log."
        : "Check the input and try again.";
  }
}

function errorFromResponse(status, text, headers) {
  let code = "";
  let message = "";
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") message = body.error;
    else if (body?.error) {
      code = body.error.code || "";
      message = body.error.message || "";
    }
  } catch {
    message = "";
  }
  const retry = Number.parseInt(headers("retry-after") || "", 10);
  const retryAfter = Number.isFinite(retry) ? retry : null;
  if (!message) message = `The server answered HTTP ${status} without an explanation.`;
  return new ApiError({ status, code, message, hint: hintFor(status, code, retryAfter), retryAfter });
}

function query(params) {
  const parts = Object.entries(params || {})
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join("&")}` : "";
}

/**
 * One request. XMLHttpRequest rather than fetch: it reports upload progress and has a timeout.
 * @param {string} method
 * @param {string} path - Relative to the page ("v1/models"), so a path prefix keeps working.
 * @param {{params?: object, body?: FormData, json?: object, timeoutMs?: number,
 *          onUpload?: (f: number) => void, onSent?: () => void, contract?: string}} options
 *   (``json`` is sent as an application/json body instead of ``body``)
 * @returns {Promise<any>} The checked JSON answer.
 */
export function request(method, path, options = {}) {
  const { params, json, timeoutMs = DEFAULT_TIMEOUT_MS, onUpload, onSent, contract } = options;
  const body = json !== undefined ? JSON.stringify(json) : options.body;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path + query(params));
    xhr.timeout = timeoutMs;
    const key = getKey();
    if (key) xhr.setRequestHeader("X-API-Key", key);
    if (json !== undefined) xhr.setRequestHeader("Content-Type", "application/json");
    xhr.setRequestHeader("Accept", "application/json");
    if (onUpload || onSent) {
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable && onUpload) onUpload(e.loaded / e.total);
      };
      xhr.upload.onload = () => onSent && onSent();
    }
    xhr.onload = async () => {
      const headers = (name) => xhr.getResponseHeader(name);
      if (xhr.status === 401) {
        serverMode.keysRequired = true;
        const err = errorFromResponse(xhr.status, xhr.responseText, headers);
        authListeners.forEach((fn) => fn({ keySet: Boolean(key), keysRequired: true, message: err.message }));
        reject(err);
        return;
      }
      if (xhr.status < 200 || xhr.status >= 300) {
        reject(errorFromResponse(xhr.status, xhr.responseText, headers));
        return;
      }
      if (!key && serverMode.keysRequired !== false) {
        serverMode.keysRequired = false;
        authListeners.forEach((fn) => fn({ keySet: false, keysRequired: false }));
      }
      let data;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        reject(new ApiError({ status: xhr.status, message: "The server's answer is not JSON.", hint: hintFor(500) }));
        return;
      }
      if (contract) {
        let problems;
        try {
          problems = await checkAnswer(contract, data);
        } catch (err) {
          problems = [`the console could not read its contract.json (${err.message})`];
        }
        if (problems.length) {
          reject(
            new ApiError({
              status: xhr.status,
              code: "contract",
              message: `The server's answer to ${contract} does not have the fields this console reads: ${problems.slice(0, 3).join("; ")}.`,
              hint: "The console and the server come from different versions: reload the page, or upgrade them together.",
            })
          );
          return;
        }
      }
      resolve(data);
    };
    const offline = (what) =>
      reject(
        new ApiError({
          status: 0,
          code: what,
          message:
            what === "timeout"
              ? `The server did not answer within ${Math.round(timeoutMs / 1000)} s.`
              : body && body instanceof FormData
                ? "The server could not be reached, or it cut the upload off (it may refuse files this large)."
                : "The server could not be reached.",
          hint: hintFor(0),
        })
      );
    xhr.onerror = () => offline("network");
    xhr.ontimeout = () => offline("timeout");
    xhr.onabort = () => offline("aborted");
    xhr.send(body ?? null);
  });
}

export const api = {
  models: () => request("GET", "v1/models", { contract: "GET /v1/models" }),
  stats: (params) => request("GET", "v1/stats", { params, contract: "GET /v1/stats" }),
  predictions: (params) => request("GET", "v1/predictions", { params, contract: "GET /v1/predictions" }),
  prediction: (id) =>
    request("GET", `v1/predictions/${encodeURIComponent(id)}`, {
      contract: "GET /v1/predictions/{prediction_id}",
    }),
  /**
   * Say whether a stored prediction was right: {correct: true|false} or {label: index|name}.
   * @returns {Promise<object>} The stored feedback.
   */
  feedback: (id, body) =>
    request("POST", `v1/predictions/${encodeURIComponent(id)}/feedback`, {
      json: body,
      contract: "POST /v1/predictions/{prediction_id}/feedback",
    }),
  /**
   * Classify one file with the explanation and the sign maps.
   * @returns {Promise<object>} The one prediction.
   */
  async predict(model, file, { onUpload, onSent } = {}) {
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    const data = await request("POST", `v1/models/${encodeURIComponent(model)}/predict`, {
      params: { explain: "true", saliency: "true", saliency_others: 3 },
      body: form,
      timeoutMs: PREDICT_TIMEOUT_MS,
      onUpload,
      onSent,
      contract: "POST /v1/models/{name}/predict",
    });
    return data.predictions[0];
  },
};
