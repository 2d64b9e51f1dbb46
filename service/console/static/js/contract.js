// The API fields the console reads (contract.json), checked against every answer it uses.
// A field that disappears or changes type shows as an error naming it, not as a blank card.

let contractPromise = null;

function loadContract() {
  if (!contractPromise) {
    const url = new URL("../contract.json", import.meta.url);
    contractPromise = fetch(url, { cache: "no-cache" })
      .then((r) => {
        if (!r.ok) throw new Error(`contract.json: HTTP ${r.status}`);
        return r.json();
      })
      .then((c) => c.responses);
    contractPromise.catch(() => {
      contractPromise = null; // try again on the next answer
    });
  }
  return contractPromise;
}

function typeOf(value) {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return "array";
  if (Number.isInteger(value)) return "integer";
  return typeof value; // "number", "string", "boolean", "object"
}

function fits(value, expected) {
  const actual = typeOf(value);
  return actual === expected || (expected === "number" && actual === "integer");
}

// Every value at `segments` under `value`; "[]" segments fan out over arrays.
// Returns [{where, value}] or a problem string when an intermediate step is missing.
function walk(root, path, optionalPrefixes) {
  const segments = path.split(".");
  let frontier = [{ where: "", value: root }];
  let prefix = "";
  for (const raw of segments) {
    const isArray = raw.endsWith("[]");
    const key = isArray ? raw.slice(0, -2) : raw;
    prefix = prefix ? `${prefix}.${raw}` : raw;
    const next = [];
    for (const { where, value } of frontier) {
      const here = where ? `${where}.${key}` : key;
      const child = value?.[key];
      if (child === null || child === undefined) {
        next.push({ where: here, value: child, missing: true, prefix: prefix.replace(/\[\]$/, "") });
        continue;
      }
      if (isArray) {
        if (!Array.isArray(child)) {
          next.push({ where: here, value: child, notArray: true });
          continue;
        }
        child.forEach((item, i) => next.push({ where: `${here}[${i}]`, value: item }));
      } else {
        next.push({ where: here, value: child });
      }
    }
    frontier = next;
    // A missing optional parent ends that branch without complaint.
    frontier = frontier.filter((f) => !(f.missing && optionalPrefixes.has(f.prefix) && prefix !== path));
    if (frontier.some((f) => f.notArray)) {
      return `${frontier.find((f) => f.notArray).where} is not a list`;
    }
    if (prefix !== path && frontier.some((f) => f.missing)) {
      return `${frontier.find((f) => f.missing).where} is missing`;
    }
  }
  return frontier;
}

/**
 * Check an API answer against the contract.
 * @param {string} name - Key in contract.json, e.g. "GET /v1/models".
 * @param {any} body - The parsed JSON answer.
 * @returns {Promise<string[]>} Problems found (empty when the answer fits).
 */
export async function checkAnswer(name, body) {
  const contract = await loadContract();
  const fields = contract[name];
  if (!fields) return [`the console has no contract for ${name}`];
  const optional = new Set(
    Object.keys(fields)
      .filter((k) => k.endsWith("?"))
      .map((k) => k.slice(0, -1).replace(/\[\]/g, "[]").replace(/\[\]$/, ""))
  );
  const problems = [];
  for (const [spec, expected] of Object.entries(fields)) {
    const isOptional = spec.endsWith("?");
    const path = isOptional ? spec.slice(0, -1) : spec;
    const found = walk(body, path, optional);
    if (typeof found === "string") {
      problems.push(found);
      continue;
    }
    for (const { where, value } of found) {
      if (value === null || value === undefined) {
        if (!isOptional) problems.push(`${where} is missing`);
      } else if (!fits(value, expected)) {
        problems.push(`${where} is ${typeOf(value)}, expected ${expected}`);
      }
    }
  }
  return problems;
}
