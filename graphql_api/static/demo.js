// hybridrec demo page: plain GraphQL over fetch, no framework and no build step.
//
// Every request goes through gql() below: a POST of {query, operationName, variables} as JSON to
// /graphql, with the API key (when one is pasted) in the X-API-Key header. The operations are the
// constants right under this comment; the "Requests" panel at the bottom of the page lists each
// one sent, with its variables, status, time and X-Cache header.

const ENDPOINT = new URL("graphql", document.baseURI).href;

// -- the GraphQL operations -------------------------------------------------------------------------

const SETUP = `query DemoSetup {
  model { version signals dataset { source users items } }
  variants { name description trafficShare coldStart weights { signal weight } }
}`;

const USER = `query DemoUser($user: ID!, $first: Int!) {
  user(id: $user) {
    id known trainedInteractions onlineInteractions
    recentHistory(first: $first) { value timestamp source item { id title year genres } }
  }
}`;

const USER_SUMMARY = `query DemoUserSummary($user: ID!) {
  user(id: $user) { id known trainedInteractions onlineInteractions }
}`;

const RECOMMENDATIONS = `query DemoRecommendations($user: ID!, $first: Int!, $variant: String, $weights: BlendWeightsInput) {
  recommendations(userId: $user, first: $first, variant: $variant, weights: $weights) {
    userId variant modelVersion userKnown coldStart coldStartReason userSource onlineInteractions
    weights { signal weight }
    items {
      rank score
      contributions { signal value }
      item { id title year genres meanRating popularity }
      explanation { sentence }
    }
  }
}`;

const RECORD = `mutation DemoWatched($user: ID!, $item: ID!, $value: Float!) {
  recordInteraction(userId: $user, itemId: $item, value: $value) {
    __typename
    ... on InteractionRecorded { eventId itemId timestamp modelVersion }
    ... on ItemNotFound { itemId message }
  }
}`;

const SIMILAR = `query DemoSimilar($item: ID!, $first: Int!, $signal: SimilaritySignal!) {
  similarItems(itemId: $item, first: $first, signal: $signal) {
    __typename
    ... on SimilarItems {
      signal
      item { id title year genres }
      items { rank score contributions { signal value } item { id title year genres } }
    }
    ... on ItemNotFound { itemId message }
  }
}`;

const SEARCH = `query DemoSearch($title: String!, $first: Int!) {
  searchItems(title: $title, first: $first) { id title year genres popularity }
}`;

// One aliased field per candidate id; eight stays well under the server's alias limit (15 by default).
const SUGGEST_IDS = ["1", "2", "3", "4", "5", "6", "7", "8"];
const SUGGEST = `query DemoKnownUsers(${SUGGEST_IDS.map((_, i) => `$u${i}: ID!`).join(", ")}) {
  ${SUGGEST_IDS.map((_, i) => `u${i}: user(id: $u${i}) { id known trainedInteractions }`).join("\n  ")}
}`;

const RECS_FIRST = 10;
const HISTORY_FIRST = 8;
const SIMILAR_FIRST = 8;

// Signal enum value -> field of BlendWeightsInput, label and colour.
const SIGNALS = {
  COLLABORATIVE: { field: "collaborative", label: "collaborative", colour: "#3b6fd8" },
  CONTENT: { field: "content", label: "content", colour: "#2e9d5b" },
  GRAPH: { field: "graph", label: "graph", colour: "#8a4fc7" },
  POPULARITY: { field: "popularity", label: "popularity", colour: "#e08a1e" },
  SPECTRAL: { field: "spectral", label: "spectral", colour: "#1a9aa6" },
  SEQUENTIAL: { field: "sequential", label: "sequential", colour: "#8c564b" },
};

// -- the client ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

const $ = (id) => document.getElementById(id);
let requestCount = 0;

/** POST one GraphQL operation; resolves to `data`, rejects with an ApiError carrying the first error's code. */
async function gql(query, variables = {}) {
  const operationName = /^(?:query|mutation)\s+(\w+)/.exec(query)?.[1] ?? null;
  const headers = { "content-type": "application/json", accept: "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["x-api-key"] = key;
  const started = performance.now();
  let response;
  try {
    response = await fetch(ENDPOINT, {
      method: "POST", headers, body: JSON.stringify({ query, operationName, variables }),
    });
  } catch (err) {
    logRequest(operationName, query, variables, "network error", performance.now() - started, null);
    throw new ApiError(`the API did not answer: ${err.message}`, "NETWORK", 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page, ...): reported below with the status
  }
  logRequest(operationName, query, variables, response.status, performance.now() - started,
             response.headers.get("x-cache"));
  const first = body?.errors?.[0];
  if (first) {
    let message = first.message;
    const retry = response.headers.get("retry-after");
    if (response.status === 429 && retry) message += ` (retry after ${retry} s)`;
    throw new ApiError(message, first.extensions?.code ?? null, response.status);
  }
  if (!response.ok || !body?.data) {
    throw new ApiError(`HTTP ${response.status} from ${ENDPOINT}`, null, response.status);
  }
  return body.data;
}

function logRequest(operationName, query, variables, status, ms, cache) {
  requestCount += 1;
  $("request-count").textContent = String(requestCount);
  const entry = h("li", { class: "request", "data-operation": operationName ?? "" },
    h("details", {},
      h("summary", {},
        h("code", {}, operationName ?? "anonymous"), ` ${JSON.stringify(variables)} → ${status}`,
        ` · ${ms.toFixed(0)} ms`, cache ? ` · x-cache: ${cache}` : ""),
      h("pre", {}, query)));
  const log = $("request-log");
  log.prepend(entry);
  while (log.children.length > 30) log.lastChild.remove();
}

// -- DOM helpers --------------------------------------------------------------------------------------

/** An element with attributes and children (strings become text nodes: no HTML is ever parsed). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const code = err.code ? ` [${err.code}]` : "";
  box.textContent = `${err.message}${code}`;
  box.hidden = false;
  if (err.code === "FORBIDDEN" || err.code === "UNAUTHENTICATED") {
    box.append(h("span", {}, " Paste an API key in the field at the top right."));
    $("api-key").classList.add("wanted");
    $("api-key").focus();
  }
}

function fmt(x, digits = 3) {
  return Number(x).toFixed(digits);
}

/** A poster stand-in: a card coloured by the item's first genre, with its title and year. */
function titleCard(item) {
  let hue = 0;
  for (const ch of (item.genres[0] ?? item.title)) hue = (hue * 31 + ch.charCodeAt(0)) % 360;
  const title = item.year ? item.title.replace(new RegExp(`\\s*\\(${item.year}\\)\\s*$`), "") : item.title;
  return h("div", {
    class: "title-card",
    style: `--hue: ${hue}`,
    "aria-hidden": "true",
  }, h("span", { class: "tc-title" }, title), h("span", { class: "tc-year" }, item.year ?? ""));
}

/** A stacked bar: one segment per signal, its width |value| / sum |value| (negative parts hatched). */
function contributionBar(contributions, score) {
  const total = contributions.reduce((s, c) => s + Math.abs(c.value), 0) || 1;
  const bar = h("div", { class: "bar", role: "img", "data-score": score,
    "aria-label": contributions.map((c) => `${SIGNALS[c.signal]?.label ?? c.signal} ${fmt(c.value)}`).join(", ") });
  for (const c of contributions) {
    if (c.value === 0) continue;
    const seg = h("span", {
      class: c.value < 0 ? "seg neg" : "seg",
      "data-signal": c.signal,
      "data-value": c.value,
      title: `${SIGNALS[c.signal]?.label ?? c.signal}: ${c.value >= 0 ? "+" : ""}${fmt(c.value, 4)}`,
      style: `width: ${(100 * Math.abs(c.value) / total).toFixed(2)}%; --c: ${SIGNALS[c.signal]?.colour ?? "#888"}`,
    });
    bar.append(seg);
  }
  return bar;
}

/** The parts as text: "collaborative 1.234 + content 0.567 + ...". */
function contributionParts(contributions) {
  return h("p", { class: "parts small" }, ...contributions.map((c, i) => h("span", { class: "part", style: `--c: ${SIGNALS[c.signal]?.colour ?? "#888"}` },
    i ? (c.value < 0 ? " − " : " + ") : (c.value < 0 ? "−" : ""), h("span", { class: "swatch" }), " ",
    `${SIGNALS[c.signal]?.label ?? c.signal} ${fmt(Math.abs(c.value))}`)));
}

// -- state --------------------------------------------------------------------------------------------

const state = {
  signals: [],          // Signal enum values of the served bundle
  variants: [],         // from the variants query
  user: null,           // the user id shown
  variant: null,        // a variant name, or null for the user's assigned one
  weights: null,        // {field: weight} when the sliders were moved, else null
  recs: null,           // the last recommendations answer
};

// -- loading ------------------------------------------------------------------------------------------

async function loadSetup() {
  const data = await gql(SETUP);
  state.signals = data.model.signals;
  state.variants = data.variants;
  $("model-version").textContent = data.model.version;
  $("model-signals").textContent = data.model.signals.map((s) => SIGNALS[s]?.label ?? s).join(", ");
  const select = $("variant");
  for (const v of data.variants) {
    select.append(h("option", { value: v.name }, `${v.name} (${Math.round(100 * v.trafficShare)}% of traffic)`));
  }
  select.append(h("option", { value: "custom", disabled: true }, "custom (the sliders)"));
  const max = Math.max(1, ...data.variants.flatMap((v) => v.weights.map((w) => w.weight)));
  const sliders = $("sliders");
  for (const signal of state.signals) {
    const meta = SIGNALS[signal] ?? { field: signal.toLowerCase(), label: signal, colour: "#888" };
    const out = h("output", { id: `out-${signal}` }, "–");
    const input = h("input", {
      type: "range", id: `w-${signal}`, "data-signal": signal, min: 0, max: niceCeil(2 * max),
      step: niceCeil(2 * max) / 100, value: 0, oninput: onSlider,
    });
    sliders.append(h("label", { class: "slider", style: `--c: ${meta.colour}` },
      h("span", { class: "swatch" }), meta.label, input, out));
  }
  $("legend").append(...state.signals.map((s) => h("span", { class: "legend-item", style: `--c: ${SIGNALS[s]?.colour}` },
    h("span", { class: "swatch" }), SIGNALS[s]?.label ?? s)));
  $("legend").append(h("span", { class: "legend-item neg" }, h("span", { class: "swatch" }), "negative part"));
}

function niceCeil(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= x);
}

async function suggestUsers() {
  const variables = Object.fromEntries(SUGGEST_IDS.map((id, i) => [`u${i}`, id]));
  const target = $("user-suggestions");
  try {
    const data = await gql(SUGGEST, variables);
    const known = Object.values(data).filter((u) => u.known);
    target.replaceChildren(...(known.length ? known.map((u) => h("button", {
      type: "button", class: "chip", "data-user": u.id, title: `${u.trainedInteractions} trained interactions`,
      onclick: () => { $("user-id").value = u.id; showUser(u.id); },
    }, u.id)) : ["none of ids 1–8; type any id (an unknown one gets a cold-start answer)"]));
  } catch (err) {
    target.textContent = `(${err.message})`;
  }
}

async function showUser(userId) {
  state.user = userId;
  const url = new URL(location.href);
  url.searchParams.set("user", userId);
  history.replaceState(null, "", url);
  showError(null);
  await Promise.all([loadHistory(), loadRecommendations()]);
}

async function loadHistory() {
  const user = state.user;
  let data;
  try {
    data = await gql(USER, { user, first: HISTORY_FIRST });
  } catch (err) {
    if (err.code !== "FORBIDDEN") {
      showError(err);
      return;
    }
    try {  // a history needs a key with the read scope where the server has keys: the rest does not
      data = await gql(USER_SUMMARY, { user });
    } catch (again) {
      showError(again);
      return;
    }
  }
  if (user !== state.user) return;
  const u = data.user;
  $("user-summary").textContent = u.known
    ? `user ${u.id}: ${u.trainedInteractions} trained interactions, ${u.onlineInteractions} recorded since`
    : `user ${u.id} is not in the served bundle (${u.onlineInteractions} recorded since)`;
  if (!u.recentHistory) {
    $("history").replaceChildren(h("li", { id: "history-needs-key", class: "muted small" },
      "Reading a user's history needs an API key with the read scope: paste one at the top right."));
    return;
  }
  $("history").replaceChildren(...u.recentHistory.map((it) => h("li", {
    class: `hist ${it.source.toLowerCase()}`, "data-item": it.item.id, "data-source": it.source,
  }, h("span", { class: "mini-card" }, titleCard(it.item)), h("span", { class: "hist-text" },
    h("strong", {}, it.item.title),
    h("span", { class: "muted small" }, it.source === "ONLINE"
      ? ` watched here${it.timestamp ? " " + new Date(it.timestamp).toLocaleTimeString() : ""}`
      : ` trained · ${it.value}`)))));
}

let recsSeq = 0;

async function loadRecommendations() {
  if (state.user === null) return;
  const seq = ++recsSeq;
  const variables = { user: state.user, first: RECS_FIRST, variant: state.weights ? null : state.variant,
                      weights: state.weights };
  $("recs").setAttribute("aria-busy", "true");
  let data;
  try {
    data = await gql(RECOMMENDATIONS, variables);
  } catch (err) {
    if (seq === recsSeq) {
      $("recs").removeAttribute("aria-busy");
      showError(err);
    }
    return;
  }
  if (seq !== recsSeq) return; // a newer request was sent meanwhile
  showError(null);
  const recs = data.recommendations;
  state.recs = recs;
  $("rec-meta").textContent = "";
  $("rec-meta").append(`for user ${recs.userId} · variant `, h("code", { id: "rec-variant" }, recs.variant),
    ` · model ${recs.modelVersion}${recs.onlineInteractions ? ` · ${recs.onlineInteractions} online interactions folded in` : ""}`);
  $("rec-cold").hidden = !recs.coldStart;
  $("rec-cold").textContent = recs.coldStart ? `Cold start: ${recs.coldStartReason ?? ""}` : "";
  if (!state.weights) setSliders(recs.weights);
  $("variant").value = state.weights ? "custom" : (state.variant ?? "");
  const description = state.variants.find((v) => v.name === recs.variant)?.description;
  $("variant-description").textContent = description ?? (recs.variant === "custom" ? "weights from the sliders" : "");
  $("recs").replaceChildren(...recs.items.map(recCard));
  $("recs").removeAttribute("aria-busy");
}

function recCard(rec) {
  const it = rec.item;
  return h("li", { class: "card rec", "data-item": it.id, "data-rank": rec.rank, "data-score": rec.score },
    titleCard(it),
    h("div", { class: "card-body" },
      h("h3", {}, h("span", { class: "rank" }, `${rec.rank}.`), " ", it.title),
      h("p", { class: "muted small" }, [it.genres.join(" · "),
        it.meanRating !== null ? ` · ★ ${fmt(it.meanRating, 1)}` : "", ` · ${it.popularity} interactions`]),
      h("div", { class: "score-row" }, contributionBar(rec.contributions, rec.score),
        h("span", { class: "score", title: "blended score: the sum of the parts" }, fmt(rec.score))),
      contributionParts(rec.contributions),
      h("p", { class: "sentence" }, rec.explanation.sentence),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "watched", onclick: () => markWatched(it.id) }, "✓ Watched"),
        h("button", { type: "button", class: "similar-btn", onclick: () => openSimilar(it) }, "Similar items"))));
}

function setSliders(weights) {
  const byName = Object.fromEntries(weights.map((w) => [w.signal, w.weight]));
  for (const signal of state.signals) {
    const input = $(`w-${signal}`);
    const w = byName[signal] ?? 0;
    input.value = w;
    $(`out-${signal}`).textContent = fmt(w, 2);
  }
}

let sliderTimer = null;

function onSlider(event) {
  const input = event.target;
  $(`out-${input.dataset.signal}`).textContent = fmt(input.value, 2);
  state.weights = Object.fromEntries(state.signals.map((s) => [SIGNALS[s]?.field ?? s.toLowerCase(),
                                                              Number($(`w-${s}`).value)]));
  $("variant").value = "custom";
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(loadRecommendations, 200);
}

async function markWatched(itemId) {
  if (state.user === null) return;
  try {
    const data = await gql(RECORD, { user: state.user, item: itemId, value: 1.0 });
    const result = data.recordInteraction;
    if (result.__typename === "ItemNotFound") throw new ApiError(result.message, "ITEM_NOT_FOUND", 200);
  } catch (err) {
    showError(err);
    return;
  }
  showError(null);
  $("api-key").classList.remove("wanted");
  await Promise.all([loadHistory(), loadRecommendations()]);
}

let similarItem = null;

async function openSimilar(item) {
  similarItem = item;
  $("similar-title").textContent = item.title;
  $("similar-items").replaceChildren();
  if (!$("similar").open) $("similar").showModal();
  let data;
  try {
    data = await gql(SIMILAR, { item: item.id, first: SIMILAR_FIRST, signal: $("similar-signal").value });
  } catch (err) {
    $("similar-items").replaceChildren(h("li", { class: "error" }, err.message));
    return;
  }
  const result = data.similarItems;
  if (result.__typename === "ItemNotFound") {
    $("similar-items").replaceChildren(h("li", { class: "error" }, result.message));
    return;
  }
  $("similar-items").replaceChildren(...result.items.map((s) => h("li", {
    class: "card similar", "data-item": s.item.id, "data-score": s.score,
  }, titleCard(s.item), h("div", { class: "card-body" },
    h("h3", {}, `${s.rank}. ${s.item.title}`),
    h("p", { class: "muted small" }, s.item.genres.join(" · ")),
    h("div", { class: "score-row" }, contributionBar(s.contributions, s.score),
      h("span", { class: "score", title: "cosine similarity" }, fmt(s.score))),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => openSimilar(s.item) }, "Similar to this"))))));
}

async function search(event) {
  event.preventDefault();
  const title = $("search-title").value.trim();
  if (!title) return;
  let items;
  try {
    items = (await gql(SEARCH, { title, first: 8 })).searchItems;
  } catch (err) {
    showError(err);
    return;
  }
  $("search-results").replaceChildren(...(items.length ? items.map((it) => h("li", { "data-item": it.id },
    h("span", {}, it.title, h("span", { class: "muted small" }, ` · ${it.popularity} interactions`)),
    h("button", { type: "button", class: "watched", disabled: state.user === null,
                  onclick: () => markWatched(it.id) }, "✓ Watched"))) : [h("li", { class: "muted" }, "no title matches")]));
}

// -- wiring -------------------------------------------------------------------------------------------

$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("user-id").value.trim();
  if (id) showUser(id);
});
$("variant").addEventListener("change", () => {
  state.variant = $("variant").value || null;
  state.weights = null;
  loadRecommendations();
});
$("similar-signal").addEventListener("change", () => similarItem && openSimilar(similarItem));
$("search-form").addEventListener("submit", search);
$("key-form").addEventListener("submit", (event) => event.preventDefault());
$("api-key").value = sessionStorage.getItem("hybridrec-api-key") ?? "";
$("api-key").addEventListener("change", () => sessionStorage.setItem("hybridrec-api-key", $("api-key").value.trim()));

async function main() {
  try {
    await loadSetup();
  } catch (err) {
    showError(err);
    if (err.code === "UNAUTHENTICATED") {
      // every operation needs a key on this server: try again once one is pasted
      $("api-key").addEventListener("change", () => location.reload(), { once: true });
    }
    return;
  }
  document.body.dataset.ready = "true";
  suggestUsers();
  const initial = new URL(location.href).searchParams.get("user");
  if (initial) {
    $("user-id").value = initial;
    showUser(initial);
  }
}

main();
