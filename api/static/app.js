// The dashboard: hash routes over the real API (docs/dashboard.md). Roles decide which write
// controls exist at all; the API refuses anyway.
import { Problem, getJSON, login, logout, maybeJSON, refresh, request, secondFactor, signedIn, whenSignedOut } from "./session.js";
import { LiveStream } from "./live.js";
import { legend, timeChart } from "./chart.js";

const $ = (sel) => document.querySelector(sel);
const state = { me: null, shops: [], shop: null, currency: null, stream: null, onEvent: null, board: null, writesOn: () => false };

// -- small helpers ----------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v != null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) node.append(c instanceof Node ? c : String(c));
  return node;
}
// Replace a container's content; absent parts (null: a panel with nothing to show) are left out.
const fill = (node, ...children) => node.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
// Run fn once, `ms` after the last of a burst of calls (a bulk import is a thousand events).
function debounced(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const money = (v) => (v == null ? "" : String(v));

function say(text, kind = "error") {
  const box = $("#message");
  box.className = kind;
  box.textContent = text;
}
function failed(e) { say(e instanceof Problem ? `${e.message}${e.field ? ` (${e.field})` : ""}` : String(e.message || e)); }

// Ask before doing anything that changes prices or automation; answers the reason, or null.
function confirmAction(title, body, { reason = true, required = false } = {}) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = body;
  $("#confirm-reason").value = "";
  $("#confirm-reason").required = required;
  $("#confirm-reason-label").hidden = !reason;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () =>
    resolve(dialog.returnValue === "ok" ? $("#confirm-reason").value : null), { once: true }));
}

// A price as the user typed it: digits, one dot, the currency's decimals at most.
export function priceError(text, decimals = 2) {
  const v = text.trim();
  if (!v) return "Enter a price.";
  if (/,/.test(v)) return `Use a dot for decimals: ${v.replace(",", ".")}, not ${v}.`;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(v)) return "A price is digits with an optional decimal point, e.g. 12.50 (no letters or symbols).";
  const places = (v.split(".")[1] || "").length;
  if (places > decimals) return `At most ${decimals} decimals in ${state.currency}.`;
  return null;
}

// -- signing in -------------------------------------------------------------------------------
let challenge = null;
let signInDone = null;

function openSignIn() {
  const dialog = $("#signin");
  $("#login-form").hidden = false;
  $("#mfa-form").hidden = true;
  $("#signin-error").textContent = "";
  if (!dialog.open) dialog.showModal();
  dialog.querySelector("input[name=tenant]").focus();
  return new Promise((resolve) => { signInDone = resolve; });
}

// The session ran out and could not be refreshed: sign in over the page, then carry on.
whenSignedOut(() => { say("Your session expired: sign in again to continue (nothing on this page was lost).", "info"); return openSignIn(); });

// Escape must not dismiss the sign-in dialog: behind it, nothing works without a session.
$("#signin").addEventListener("cancel", (ev) => ev.preventDefault());

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    const answer = await login(f.get("tenant"), f.get("username"), f.get("password"));
    if (answer.mfa_required) {
      challenge = answer.challenge;
      $("#login-form").hidden = true;
      $("#mfa-form").hidden = false;
      $("#mfa-form input[name=code]").focus();
    } else await signedInNow();
  } catch (e) { $("#signin-error").textContent = e.message; }
});

$("#mfa-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await secondFactor(challenge, (f.get("code") || "").trim(), (f.get("recovery_code") || "").trim());
    ev.target.reset();
    await signedInNow();
  } catch (e) { $("#signin-error").textContent = e.message; }
});

async function signedInNow() {
  $("#signin").close();
  say("", "info");
  await loadIdentity();
  const resolve = signInDone;
  signInDone = null;
  if (resolve) resolve(true); else route();
}

async function loadIdentity() {
  const [me, shops] = await Promise.all([getJSON("/auth/me"), getJSON("/shops")]);
  state.me = me;
  state.shops = shops.shops;
  const roles = Object.keys(state.me.roles || {});
  // The roles' permissions as domain/account.py grants them: prices:write to admins and to sellers
  // over their shops (null: every shop); the tenant's log to auditors, admins and tenant-wide sellers.
  const grants = state.me.roles || {};
  state.writesOn = (shop) => "admin" in grants || ("seller" in grants && (grants.seller === null || grants.seller.includes(shop)));
  state.canAudit = "auditor" in grants || "admin" in grants || grants.seller === null;
  $("#who").textContent = `${state.me.username} (${roles.join(", ")})`;
  const select = $("#shop-select");
  select.replaceChildren(...state.shops.map((id) => h("option", { value: id }, id.slice(0, 8))));
  $("#top").hidden = false;
  $("#health").hidden = false;
  pollHealth();
}

$("#logout").addEventListener("click", async () => {
  await logout().catch(() => {});
  state.stream?.stop();
  location.hash = "#/";
  location.reload();
});
$("#shop-select").addEventListener("change", (ev) => { location.hash = `#/shop/${ev.target.value}`; });

// -- live events and health -------------------------------------------------------------------
function follow(shopId) {
  if (state.stream?.shopId === shopId) return;
  state.stream?.stop();
  state.stream = new LiveStream(`/events?shop_id=${shopId}`, (e) => state.onEvent?.(e), (s) => {
    $("#health").dataset.stream = s;
    renderHealth();
  }).start();
  state.stream.shopId = shopId;
}

let lastHealth = null;
async function pollHealth() {
  if (!signedIn()) return;
  try {
    const [lag, mine] = await Promise.all([getJSON("/analytics/lag"), getJSON("/dashboard/health")]);
    lastHealth = { lag, mine };
    renderHealth();
  } catch (e) { /* the strip shows the last figures; pages report their own errors */ }
}
function renderHealth() {
  const strip = $("#health"), stream = strip.dataset.stream || "connecting";
  const parts = [h("span", { id: "stream-state" }, `Live: ${stream}`)];
  if (lastHealth) {
    const worst = lastHealth.lag.projections.reduce((m, p) => Math.max(m, p.seconds_behind), 0);
    const policy = lastHealth.lag.policies.reduce((m, p) => Math.max(m, p.seconds_behind), 0);
    parts.push(h("span", { class: worst > 5 ? "bad" : "" }, `Projection lag: ${worst.toFixed(1)} s`),
      h("span", { class: policy > 5 ? "bad" : "" }, `Policy lag: ${policy.toFixed(1)} s`),
      h("span", {}, `Last event: ${when(lastHealth.mine.last_event_at) || "none"}`));
    if (lastHealth.lag.parked.length) parts.push(h("span", { class: "bad" }, `${lastHealth.lag.parked.length} parked events`));
  }
  strip.replaceChildren(...parts);
}
setInterval(pollHealth, 5000);

// -- routes -----------------------------------------------------------------------------------
async function route() {
  if (!signedIn()) return;
  say("");
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const main = $("#main");
  state.onEvent = null;
  try {
    if (parts[0] === "audit") return await auditPage(main);
    const shop = parts[0] === "shop" && state.shops.includes(parts[1]) ? parts[1] : state.shops[0];
    if (!shop) { fill(main, h("p", {}, "No shops yet: open one through the API (POST /shops).")); return; }
    const chosen = chooseShop(shop);  // the board loads its data meanwhile: one round trip less
    if (parts[2] === "listing") return await chosen.then(() => listingPage(main, shop, parts[3]));
    if (parts[2] === "overview") return await chosen.then(() => shopPage(main, shop));
    return await boardPage(main, shop, chosen);
  } catch (e) { failed(e); }
}
// On navigation the focus moves to the new page's content (keyboard and screen-reader users start there).
window.addEventListener("hashchange", () => route().then(() => $("#main").focus({ preventScroll: true })));

async function chooseShop(shop) {
  if (state.shop !== shop) {
    const facts = await getJSON(`/shops/${shop}`);
    state.shop = shop;
    state.currency = facts.currency;
    state.shopName = facts.name;
    state.board = null;
  }
  $("#shop-select").value = shop;
  $("#nav-board").href = `#/shop/${shop}`;
  $("#nav-shop").href = `#/shop/${shop}/overview`;
  follow(shop);
}
const decimalsOf = () => (["JPY", "KRW", "HUF", "ISK", "CLP", "VND"].includes(state.currency) ? 0 : 2);

// -- the price board --------------------------------------------------------------------------
const COLUMNS = [
  ["title", "Listing"], ["price", "Price", "num"], ["band", "Competitors (min / median / max)", "num opt"],
  ["rule", "Rule", "opt"], ["last", "Last change"], ["guardrails", "Floor / ceiling / cost", "num opt"], ["auto", "Automation"],
];
const view = { sort: "title", desc: false, search: "", source: "", auto: "" };

async function boardPage(main, shop, chosen = null) {
  const [data, automation, rules] = await Promise.all([
    getJSON(`/shops/${shop}/board`), getJSON(`/shops/${shop}/automation`), getJSON(`/shops/${shop}/rules`), chosen]);
  state.ruleNames = Object.fromEntries(rules.rules.map((r) => [r.rule_id, r.name]));
  state.running = automation.running;
  state.board = new Map(data.listings.map((l) => [l.listing_id, l]));
  const search = h("input", { type: "search", id: "board-search", placeholder: "title, SKU, id", value: view.search,
    oninput: (e) => { view.search = e.target.value.toLowerCase(); drawBoard(); } });
  const source = h("select", { id: "board-source", onchange: (e) => { view.source = e.target.value; drawBoard(); } },
    ["", "manual", "rule", "rollback", "import", "experiment"].map((s) => h("option", { value: s, selected: s === view.source }, s || "any")));
  const auto = h("select", { id: "board-auto", onchange: (e) => { view.auto = e.target.value; drawBoard(); } },
    ["", "automated", "manual", "stopped"].map((s) => h("option", { value: s, selected: s === view.auto }, s || "any")));
  fill(main, 
    h("h1", {}, `Price board — ${state.shopName}`),
    h("p", { class: "muted" }, `${data.listings.length} listings; competitor band over the last ${data.band_days} days. `,
      automation.running ? "Automated repricing is running." : h("strong", { class: "error" }, "Automated repricing is stopped.")),
    h("div", { class: "toolbar" }, h("label", {}, "Search", search), h("label", {}, "Last change by", source), h("label", {}, "Automation", auto),
      h("span", { id: "board-count", class: "muted", "aria-live": "polite" })),
    h("div", { class: "table-wrap" }, h("table", { id: "board" },
      h("thead", {}, h("tr", {}, COLUMNS.map(([key, label, cls]) => h("th", { class: cls || "", "aria-sort": view.sort === key ? (view.desc ? "descending" : "ascending") : "none" },
        h("button", { type: "button", "data-sort": key, onclick: () => sortBy(key) }, label))))),
      h("tbody", { id: "board-body" }))));
  drawBoard();
  state.onEvent = (e) => onBoardEvent(e, main, shop);
  // After the frame that shows the rows: bench ui reads this mark (time since the navigation began).
  requestAnimationFrame(() => setTimeout(() => performance.mark("board-painted"), 0));
}

// Sorting redraws the rows from memory: no request, and the focus stays on the header's button.
function sortBy(key) {
  view.desc = view.sort === key ? !view.desc : false;
  view.sort = key;
  for (const th of document.querySelectorAll("#board th")) {
    const mine = th.querySelector("button")?.dataset.sort === key;
    th.setAttribute("aria-sort", mine ? (view.desc ? "descending" : "ascending") : "none");
  }
  drawBoard();
}

function automationOf(l) {
  if (!state.running) return "stopped";
  return l.rule_id ? "automated" : "manual";
}
function sortKey(l, key) {
  switch (key) {
    case "price": return Number(l.price);
    case "band": return Number(l.band_median ?? Infinity);
    case "rule": return state.ruleNames[l.rule_id] || "";
    case "last": return l.price_changed_at || "";
    case "guardrails": return Number(l.floor ?? 0);
    case "auto": return automationOf(l);
    default: return (l.title || "").toLowerCase();
  }
}
function rowHTML(l) {
  const a = automationOf(l);
  const band = l.band_observations ? `${money(l.band_min)} / ${money(l.band_median)} / ${money(l.band_max)}` : "—";
  return `<tr data-id="${esc(l.listing_id)}"><td><a href="#/shop/${esc(l.shop_id || state.shop)}/listing/${esc(l.listing_id)}">${esc(l.title || l.listing_id)}</a>` +
    `<div class="muted">${esc(l.sku || "")}</div></td><td class="num price">${esc(l.price)} ${esc(l.currency)}</td>` +
    `<td class="num opt">${esc(band)}</td><td class="opt">${esc(state.ruleNames[l.rule_id] || (l.rule_id ? l.rule_id.slice(0, 8) : "—"))}</td>` +
    `<td class="last">${esc(l.price_source || "")} by ${esc((l.price_actor_id || "").slice(0, 12))}<div class="muted">${esc(l.price_reason || "")} ${esc(when(l.price_changed_at))}</div></td>` +
    `<td class="num opt">${esc(money(l.floor) || "—")} / ${esc(money(l.ceiling) || "—")} / ${esc(money(l.cost) || "—")}</td>` +
    `<td><span class="pill ${a === "automated" ? "auto" : a}">${a}</span></td></tr>`;
}
function drawBoard() {
  const body = $("#board-body");
  if (!body || !state.board) return;
  let rows = [...state.board.values()];
  if (view.search) rows = rows.filter((l) => `${l.title} ${l.sku} ${l.external_id} ${l.listing_id}`.toLowerCase().includes(view.search));
  if (view.source) rows = rows.filter((l) => l.price_source === view.source);
  if (view.auto) rows = rows.filter((l) => automationOf(l) === view.auto);
  const dir = view.desc ? -1 : 1;
  rows.sort((a, b) => { const x = sortKey(a, view.sort), y = sortKey(b, view.sort); return x < y ? -dir : x > y ? dir : 0; });
  $("#board-count").textContent = `${rows.length} shown`;
  // A screenful first, the rest in chunks on later frames: the page shows rows at once and stays
  // responsive while a thousand more are laid out. A newer draw cancels the chunks of an older one.
  const draw = ++drawing;
  body.innerHTML = rows.slice(0, FIRST_ROWS).map(rowHTML).join("");
  const more = (from) => {
    if (draw !== drawing || from >= rows.length) return;
    body.insertAdjacentHTML("beforeend", rows.slice(from, from + CHUNK_ROWS).map(rowHTML).join(""));
    requestAnimationFrame(() => more(from + CHUNK_ROWS));
  };
  requestAnimationFrame(() => more(FIRST_ROWS));
}
const FIRST_ROWS = 60, CHUNK_ROWS = 250;
let drawing = 0;
// Whole reloads (new listings, new competitor prices, a stop) wait for the burst to end; a price
// change, the common case, updates its one row at once.
const reloadBoard = debounced((main, shop) => { if (location.hash.split("/").length <= 3) boardPage(main, shop).catch(failed); }, 400);
function onBoardEvent(e, main, shop) {
  if (e.type === "reload" || e.type?.startsWith("Shop.Automation") || e.type?.startsWith("ObservationBatch")) return reloadBoard(main, shop);
  const l = state.board.get(e.aggregate_id);
  if (!l) { if (e.type === "Listing.Registered") reloadBoard(main, shop); return; }
  if (e.type === "Listing.PriceChanged") {
    Object.assign(l, { price: e.data.price.amount, price_version: e.version, price_changed_at: e.meta.occurred_at,
      price_source: e.meta.source, price_actor_id: e.meta.actor_id, price_reason: e.meta.reason, version: e.version });
  } else if (e.type === "Listing.GuardrailsSet") {
    const g = e.data.guardrails || {};
    Object.assign(l, { floor: g.floor?.amount ?? l.floor, ceiling: g.ceiling?.amount ?? l.ceiling, cost: g.cost?.amount ?? l.cost });
  } else if (e.type === "Listing.RuleAssigned") l.rule_id = e.data.rule_id;
  else if (e.type === "Listing.RuleUnassigned") l.rule_id = null;
  else return;
  const row = document.querySelector(`#board-body tr[data-id="${CSS.escape(l.listing_id)}"]`);
  if (row) { row.outerHTML = rowHTML(l); document.querySelector(`#board-body tr[data-id="${CSS.escape(l.listing_id)}"]`).classList.add("flash"); }
}

// -- a listing --------------------------------------------------------------------------------
// A live re-render keeps what was being typed (and where) in the price form.
const reloadListing = debounced((main, shop, id) => {
  if (!location.hash.endsWith(`/listing/${id}`)) return;  // the page was left meanwhile
  const kept = ["new-price", "price-reason"].map((field) => [field, document.getElementById(field)?.value]);
  const focused = document.activeElement?.id;
  listingPage(main, shop, id).then(() => {
    for (const [field, value] of kept) if (value && document.getElementById(field)) document.getElementById(field).value = value;
    if (focused) document.getElementById(focused)?.focus();
  }).catch(failed);
}, 200);

async function listingPage(main, shop, id) {
  const base = `/shops/${shop}/listings/${id}`;
  const since = new Date(Date.now() - 90 * 864e5).toISOString();
  const [listing, automation, changes, bands, sales, elasticity, forecast, recommendation] = await Promise.all([
    getJSON(base), getJSON(`${base}/automation`),
    getJSON(`/shops/${shop}/analytics/price-changes?listing_id=${id}&limit=1000`),
    getJSON(`/shops/${shop}/analytics/competitor-bands?bucket=day&listing_id=${id}&since=${encodeURIComponent(since)}&limit=1000`),
    getJSON(`/shops/${shop}/analytics/sales-by-listing?bucket=day&listing_id=${id}&since=${encodeURIComponent(since)}&limit=1000`),
    maybeJSON(`${base}/elasticity`), maybeJSON(`${base}/forecast?horizon=30`), maybeJSON(`${base}/recommendation`)]);
  const series = [
    { kind: "band", axis: "left", color: "#e08a00", label: "Competitors min–max", points: bands.items.map((b) => ({ t: new Date(b.bucket), lo: +b.min_price, hi: +b.max_price })) },
    { kind: "line", axis: "left", color: "#a15c00", label: "Competitor median", points: bands.items.map((b) => ({ t: new Date(b.bucket), y: +b.median })) },
    { kind: "step", axis: "left", color: "#1f5fbf", label: "Our price", points: changes.items.map((c) => ({ t: new Date(c.occurred_at), y: +c.price })) },
    { kind: "bars", axis: "right", color: "#1b7f3b", label: "Units sold per day", points: sales.items.map((s) => ({ t: new Date(s.bucket), y: +s.units })) },
  ];
  const rows = [...changes.items].sort((a, b) => b.version - a.version);
  const detail = h("div", { id: "explain", class: "panel", hidden: true });
  fill(main, 
    h("p", {}, h("a", { href: `#/shop/${shop}` }, "← Board")),
    h("h1", {}, listing.title || listing.listing_id),
    h("p", { id: "listing-state" }, `Price `, h("strong", { id: "listing-price" }, `${listing.price} ${listing.currency}`),
      ` · version ${listing.version} · floor ${listing.floor ?? "—"} · ceiling ${listing.ceiling ?? "—"} · cost ${listing.cost ?? "—"}`,
      ` · rule ${automation.rule_id ?? "none"}`),
    state.writesOn(shop) ? priceForm(shop, id, listing) : null,
    h("h2", {}, "Price, competitors and sales"), timeChart(series, { title: "Price history with competitor band and daily units" }), legend(series),
    demandPanels(elasticity, forecast, recommendation),
    h("h2", {}, "Price changes"), detail,
    h("div", { class: "table-wrap" }, h("table", { id: "changes" },
      h("thead", {}, h("tr", {}, ["Version", "When", "Price", "Change", "Source", "Who", "Why", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((c) => h("tr", { "data-version": c.version },
        h("td", {}, c.version), h("td", {}, when(c.occurred_at)), h("td", { class: "num" }, c.price), h("td", { class: "num" }, c.change ?? ""),
        h("td", {}, c.kind === "compensation" ? `rollback of v${(c.compensates || []).join(", ")}` : c.source),
        h("td", {}, c.actor_id?.slice(0, 12)), h("td", {}, c.reason),
        h("td", {}, h("button", { type: "button", onclick: () => explainChange(detail, shop, id, c, listing) }, "Explain"),
          state.writesOn(shop) && c.kind !== "registered" ? h("button", { type: "button", class: "undo", onclick: () => rollback(shop, id, listing, c, "undo") }, "Undo") : null,
          state.writesOn(shop) && c.price !== listing.price ? h("button", { type: "button", class: "restore", onclick: () => rollback(shop, id, listing, c, "to") }, "Restore") : null)))))));
  state.onEvent = (e) => { if (e.aggregate_id === id || e.type === "reload") reloadListing(main, shop, id); };
}

function priceForm(shop, id, listing) {
  const input = h("input", { id: "new-price", inputmode: "decimal", autocomplete: "off", "aria-describedby": "price-hint", placeholder: listing.price });
  const reason = h("input", { id: "price-reason", maxlength: 500, autocomplete: "off" });
  return h("form", { class: "toolbar", id: "price-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const problem = priceError(input.value, decimalsOf());
    if (problem) { say(problem); input.setAttribute("aria-invalid", "true"); input.focus(); return; }
    input.removeAttribute("aria-invalid");
    try {
      await request(`/shops/${shop}/listings/${id}/price`, { method: "PUT",
        json: { price: input.value.trim(), currency: listing.currency, reason: reason.value, expected_version: listing.version } });
      say(`Price set to ${input.value.trim()} ${listing.currency}.`, "info");
    } catch (e) { failed(e); }
  } }, h("label", {}, `New price (${listing.currency})`, input), h("label", {}, "Reason", reason),
  h("button", { type: "submit", class: "primary" }, "Set price"), h("span", { id: "price-hint", class: "muted" }, "Digits and a dot, e.g. 12.50"));
}

async function rollback(shop, id, listing, change, kind) {
  const target = kind === "undo" ? change.previous_price : change.price;
  const what = kind === "undo"
    ? `Undo the change of version ${change.version} (${change.previous_price} → ${change.price}): the price goes from ${listing.price} back to ${target} ${listing.currency}.`
    : `Restore the price of version ${change.version}: the price goes from ${listing.price} to ${target} ${listing.currency}.`;
  const reason = await confirmAction(kind === "undo" ? "Undo this price change?" : "Roll back to this version?",
    `${what} A compensating change is appended; history is kept.`);
  if (reason === null) return;
  const body = kind === "undo" ? { undo_version: change.version } : { to_version: change.version };
  try {
    await request(`/shops/${shop}/listings/${id}/rollback`, { method: "POST", json: { ...body, reason, expected_version: listing.version } });
    say(`Rolled back: the price is ${target} ${listing.currency} again.`, "info");
  } catch (e) { failed(e instanceof Problem ? Object.assign(e, { message: `Rollback refused: ${e.message}` }) : e); }
}

async function explainChange(panel, shop, id, change, listing) {
  panel.hidden = false;
  const lines = [h("h3", {}, `Version ${change.version}: ${change.previous_price ?? "—"} → ${change.price} ${change.currency}`),
    h("p", {}, `${change.kind}, source ${change.source}, by ${change.actor_id} (${change.actor_kind}), ${when(change.occurred_at)}`),
    h("p", {}, `Reason: ${change.reason || "—"} · rule: ${change.rule || "—"} · causation: ${change.causation_id || "—"} · correlation: ${change.correlation_id || "—"}`)];
  if (change.version === listing.last_price_change_version) {
    const why = await getJSON(`/shops/${shop}/listings/${id}/explain`).catch(() => null);
    if (why) lines.push(h("pre", {}, JSON.stringify(why, null, 2)));
  }
  lines.push(h("a", { href: `#/audit/${id}` }, "The listing's full history in the audit page"));
  panel.replaceChildren(...lines);
  panel.scrollIntoView({ block: "nearest" });
}

function demandPanels(elasticity, forecast, recommendation) {
  const panels = [];
  if (elasticity) {
    const e = elasticity.estimate;
    panels.push(h("div", { class: "panel", id: "elasticity" }, h("h3", {}, "Elasticity"),
      e ? h("p", {}, `${e.elasticity.toFixed(2)} (95%: ${e.ci95[0].toFixed(2)} to ${e.ci95[1].toFixed(2)}), ${e.label}, ${e.n_days} days`)
        : h("p", {}, `No estimate: ${elasticity.refusal?.needs || elasticity.refusal?.reason}`),
      h("p", { class: "muted" }, elasticity.caveat || "")));
  }
  const points = forecast?.forecast?.points;
  if (points?.length) {
    const s = [{ kind: "band", axis: "left", color: "#1b7f3b", label: "95% interval", points: points.map((d) => ({ t: new Date(d.day), lo: d.units_95.lower, hi: d.units_95.upper })) },
      { kind: "band", axis: "left", color: "#1b7f3b", label: "80% interval", points: points.map((d) => ({ t: new Date(d.day), lo: d.units_80.lower, hi: d.units_80.upper })) },
      { kind: "line", axis: "left", color: "#1b7f3b", label: "Expected units", points: points.map((d) => ({ t: new Date(d.day), y: d.units })) }];
    panels.push(h("div", { class: "panel", id: "forecast" }, h("h3", {}, `Forecast: units per day (${forecast.forecast.model})`), timeChart(s, { title: "Forecast" }), legend(s)));
  }
  const r = recommendation?.recommendation;
  if (recommendation) panels.push(h("div", { class: "panel", id: "recommendation" }, h("h3", {}, "Recommendation"),
    r ? h("p", {}, r.moved ? `Move to ${r.price} ${r.currency} (from ${r.current_price}): +${r.gain_per_day} per day expected, +${r.pessimistic_gain_per_day} at worst.`
      : `Keep ${r.current_price} ${r.currency}.`, h("br"), (r.reasons || []).join("; "))
      : h("p", {}, `No recommendation: ${recommendation.refusal?.needs || recommendation.refusal?.reason}`)));
  return panels.length ? h("div", {}, h("h2", {}, "Demand models"), h("div", { class: "panels" }, panels)) : null;
}

// -- the shop ---------------------------------------------------------------------------------
async function shopPage(main, shop) {
  const since = new Date(Date.now() - 90 * 864e5).toISOString();
  const [automation, sales, byListing, board, rules, changes, experiments, forecast] = await Promise.all([
    getJSON(`/shops/${shop}/automation`),
    getJSON(`/shops/${shop}/analytics/sales-by-shop?bucket=day&since=${encodeURIComponent(since)}&limit=1000`),
    getJSON(`/shops/${shop}/analytics/sales-by-listing?bucket=day&since=${encodeURIComponent(since)}&limit=100000`),
    getJSON(`/shops/${shop}/board`),
    getJSON(`/shops/${shop}/rules`),
    getJSON(`/shops/${shop}/analytics/price-changes?since=${encodeURIComponent(since)}&limit=5000`),
    maybeJSON(`/shops/${shop}/experiments`),
    maybeJSON(`/shops/${shop}/forecast?horizon=30`)]);
  // Profit at today's costs: each day's revenue less its units at the listing's current cost (no cost: left out).
  const costs = new Map(board.listings.map((l) => [l.listing_id, l.cost == null ? null : Number(l.cost)]));
  const profit = new Map();
  for (const r of byListing.items) {
    const cost = costs.get(r.listing_id);
    if (cost == null) continue;
    profit.set(r.bucket, (profit.get(r.bucket) || 0) + Number(r.revenue) - Number(r.units) * cost);
  }
  const series = [
    { kind: "line", axis: "left", color: "#1f5fbf", label: `Revenue per day (${state.currency})`, points: sales.items.map((s) => ({ t: new Date(s.bucket), y: +s.revenue })) },
    { kind: "line", axis: "left", color: "#7a3db8", label: `Profit per day at current costs (${state.currency})`, points: [...profit].map(([b, y]) => ({ t: new Date(b), y })) },
    { kind: "bars", axis: "right", color: "#1b7f3b", label: "Units per day", points: sales.items.map((s) => ({ t: new Date(s.bucket), y: +s.units })) }];
  // The shop's own forecast (not a sum of listings'), when the demand models have run: 95% band and expectation.
  const ahead = forecast?.forecast?.points || [];
  if (ahead.length) series.unshift(
    { kind: "band", axis: "left", color: "#1f5fbf", label: "Revenue forecast, 95% interval", points: ahead.map((d) => ({ t: new Date(d.day), lo: +d.revenue_95.lower, hi: +d.revenue_95.upper })) },
    { kind: "line", axis: "left", color: "#6b8fd6", label: `Expected revenue (${forecast.forecast.model})`, points: ahead.map((d) => ({ t: new Date(d.day), y: +d.revenue })) });
  const byRule = {};
  for (const c of changes.items) if (c.source === "rule") byRule[c.rule || "?"] = (byRule[c.rule || "?"] || 0) + 1;
  const stopped = !automation.running;
  const stop = automation.shop.stopped ? automation.shop : automation.global;
  fill(main, 
    h("h1", {}, `Shop — ${state.shopName}`),
    h("section", { class: "panel", "aria-labelledby": "auto-title" }, h("h2", { id: "auto-title" }, "Automated repricing"),
      h("p", { class: "stop-state", id: "automation-state" }, stopped ? `Stopped${automation.shop.stopped ? "" : " for the whole tenant"} by ${stop.by} at ${when(stop.at)}: ${stop.reason}` : "Running"),
      state.writesOn(shop) ? (stopped
        ? h("button", { type: "button", id: "resume", class: "primary", onclick: () => switchAutomation(shop, "resume") }, "Resume automated repricing")
        : h("button", { type: "button", id: "emergency-stop", class: "danger", onclick: () => switchAutomation(shop, "stop") }, "Emergency stop")) : null),
    h("h2", {}, "Revenue, profit and units (last 90 days, and 30 ahead when forecast)"),
    sales.items.length || ahead.length ? [timeChart(series, { title: "Revenue, profit and units per day, with the forecast", now: ahead.length ? new Date() : null }), legend(series)]
      : h("p", { class: "muted" }, "No sales recorded in the last 90 days."),
    h("h2", {}, "Rule activity (last 90 days)"),
    h("table", { id: "rules" }, h("thead", {}, h("tr", {}, ["Rule", "Version", "State", "Automated changes"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rules.rules.map((r) => h("tr", {}, h("td", {}, r.name), h("td", {}, r.version), h("td", {}, r.retired ? "retired" : "active"),
        h("td", { class: "num" }, byRule[r.name] || byRule[r.rule_id] || 0))))),
    experimentsPanel(experiments),
    h("p", { class: "muted" }, "Exports: ", exportButton(`/shops/${shop}/analytics/price-changes?format=csv&limit=100000`, "price-changes.csv"), " ",
      exportButton(`/shops/${shop}/analytics/sales?format=csv&limit=100000`, "sales.csv")));
  state.onEvent = (e) => { if (e.type?.startsWith("Shop.") || e.type === "reload") shopPage(main, shop).catch(failed); };
}

function experimentsPanel(answer) {
  if (!answer?.experiments?.length) return null;
  return [h("h2", {}, "Experiments"), h("table", { id: "experiments" },
    h("thead", {}, h("tr", {}, ["Name", "State", "Metric", "Arms", "Listings", "Starts"].map((c) => h("th", {}, c)))),
    h("tbody", {}, answer.experiments.map((x) => h("tr", {}, h("td", {}, x.name), h("td", {}, x.status), h("td", {}, x.metric),
      h("td", {}, (x.arms || []).map((a) => a.name).join(", ")), h("td", { class: "num" }, (x.listings || []).length), h("td", {}, when(x.starts_at))))))];
}

async function switchAutomation(shop, action) {
  const reason = await confirmAction(action === "stop" ? "Stop all automated price changes in this shop?" : "Resume automated repricing?",
    action === "stop" ? "Rules stop changing prices in this shop at once, until someone resumes. Manual changes still work."
      : "Rules start changing prices in this shop again.", { required: true });
  if (reason === null) return;
  try {
    await request(`/shops/${shop}/automation/${action}`, { method: "POST", json: { reason } });
    say(action === "stop" ? "Automated repricing stopped." : "Automated repricing resumed.", "info");
    await shopPage($("#main"), shop);
  } catch (e) { failed(e); }
}

// Exports need the access token, which a plain link cannot carry: fetched, then saved.
function exportButton(path, name) {
  return h("button", { type: "button", class: "export", onclick: async () => {
    try {
      const blob = await (await request(typeof path === "function" ? path() : path)).blob();
      const a = h("a", { href: URL.createObjectURL(blob), download: name });
      document.body.append(a); a.click(); a.remove();
    } catch (e) { failed(e); }
  } }, `Download ${name}`);
}

// -- audit ------------------------------------------------------------------------------------
async function auditPage(main) {
  if (!state.canAudit) { fill(main, h("h1", {}, "Audit"), h("p", {}, "Your roles cannot read the tenant's log: it needs an auditor, an admin, or a seller of every shop.")); return; }
  const aggregate = location.hash.split("/")[2] || "";
  const f = { type: h("input", { name: "type", placeholder: "Listing.PriceChanged" }), actor: h("input", { name: "actor" }),
    since: h("input", { name: "since", type: "datetime-local" }), until: h("input", { name: "until", type: "datetime-local" }),
    source: h("select", { name: "source" }, ["", "manual", "rule", "rollback", "import", "experiment"].map((s) => h("option", { value: s }, s || "any"))) };
  const list = h("tbody", { id: "timeline" });
  const verifyOut = h("span", { id: "verify-result" });
  const historyOut = h("div", { id: "history" });
  const load = async () => {
    const q = new URLSearchParams();
    if (f.type.value) q.append("type", f.type.value);
    if (f.actor.value) q.set("actor", f.actor.value);
    if (f.since.value) q.set("since", new Date(f.since.value).toISOString());
    if (f.until.value) q.set("until", new Date(f.until.value).toISOString());
    if (state.shop) q.set("shop_id", state.shop);
    // The log pages oldest first: read forward (at most 10 pages of 1,000) and keep the newest 200.
    q.set("limit", "1000");
    let kept = [], after = 0, more = true;
    for (let pages = 0; more && pages < 10; pages++) {
      q.set("after", String(after));
      const page = await getJSON(`/audit/events?${q}`);
      kept = kept.concat(page.events.filter((e) => !f.source.value || e.meta?.source === f.source.value)).slice(-200);
      after = page.next_after;
      more = page.more;
    }
    list.replaceChildren(...kept.reverse().map(eventRow));
    q.delete("limit");
    q.delete("after");
    exportQuery = q.toString();
  };
  let exportQuery = "";
  const exportLink = exportButton(() => `/audit/export?${exportQuery}`, "audit.ndjson");
  fill(main, h("h1", {}, "Audit"),
    h("form", { class: "toolbar", onsubmit: (ev) => { ev.preventDefault(); load().catch(failed); } },
      h("label", {}, "Type", f.type), h("label", {}, "Actor", f.actor), h("label", {}, "Source", f.source),
      h("label", {}, "Since", f.since), h("label", {}, "Until", f.until), h("button", { type: "submit" }, "Filter")),
    h("p", {}, h("button", { type: "button", id: "verify", onclick: async () => {
      verifyOut.textContent = "checking…";
      try { const v = await getJSON("/audit/verify"); verifyOut.textContent = v.ok === false ? `BROKEN: ${JSON.stringify(v)}` : `Chain intact: ${v.checked_own ?? "?"} of your events verified.`; }
      catch (e) { verifyOut.textContent = e.message; }
    } }, "Verify hash chain"), " ", verifyOut, " ", exportLink),
    h("form", { class: "toolbar", onsubmit: async (ev) => { ev.preventDefault(); await showHistory(historyOut, new FormData(ev.target).get("aggregate")).catch(failed); } },
      h("label", {}, "Aggregate id", h("input", { name: "aggregate", value: aggregate, size: 38 })), h("button", { type: "submit" }, "History")), historyOut,
    h("h2", {}, "Timeline (newest first)"),
    h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Position", "Recorded", "Type", "Aggregate", "Who", "Source", "Why"].map((c) => h("th", {}, c)))), list)));
  await load();
  if (aggregate) await showHistory(historyOut, aggregate);
  state.onEvent = (e) => { if (e.position) list.prepend(eventRow(e)); };
}
function eventRow(e) {
  return h("tr", {}, h("td", {}, e.position), h("td", {}, when(e.recorded_at)), h("td", {}, e.type),
    h("td", {}, h("a", { href: `#/audit/${e.aggregate_id}` }, e.aggregate_id.slice(0, 8))), h("td", {}, e.meta?.actor_id || ""),
    h("td", {}, e.meta?.source || ""), h("td", {}, e.meta?.reason || ""));
}
async function showHistory(out, id) {
  if (!id) return;
  const page = await getJSON(`/aggregates/${encodeURIComponent(id.trim())}/history?limit=1000`);
  out.replaceChildren(h("pre", {}, page.events.map((e) => `v${e.version} ${e.recorded_at} ${e.type} ${JSON.stringify(e.data)}`).join("\n")));
}

// -- start: a session survives a reload through the refresh cookie ------------------------------
(async () => {
  if (await refresh()) await loadIdentity(); else await openSignIn();
  route();
})();
