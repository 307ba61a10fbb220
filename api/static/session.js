// The browser session: the access token lives in this module's memory only; the refresh token is an
// httpOnly cookie the page cannot read, spent by POST /auth/browser/token (docs/dashboard.md).
const CSRF = { "X-Requested-With": "etsypro-dashboard" };
let accessToken = null;
let refreshing = null;
let onSignedOut = () => {};

export class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.field = body?.field || null;
    this.body = body;
  }
}

export function whenSignedOut(callback) { onSignedOut = callback; }

// Resolves the next time a session starts (sign-in or refresh): the live stream waits on it.
let waiting = [];
export function nextSession() { return new Promise((resolve) => waiting.push(resolve)); }
function started(token) {
  accessToken = token;
  for (const resolve of waiting.splice(0)) resolve();
}
export function signedIn() { return accessToken !== null; }
export function token() { return accessToken; }

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { ...CSRF, "Content-Type": "application/json" }, body: JSON.stringify(body ?? {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Problem(response.status, data);
  return data;
}

export async function login(tenant, username, password) {
  const answer = await post("/auth/browser/login", { tenant, username, password });
  if (!answer.mfa_required) started(answer.access_token);
  return answer;
}

export async function secondFactor(challenge, code, recoveryCode) {
  const body = recoveryCode ? { challenge, recovery_code: recoveryCode } : { challenge, code };
  started((await post("/auth/browser/login/mfa", body)).access_token);
}

// One refresh at a time: every request that met a 401 waits for the same one.
export function refresh() {
  refreshing ??= post("/auth/browser/token")
    .then((answer) => { started(answer.access_token); return true; })
    .catch(() => { accessToken = null; return false; })
    .finally(() => { refreshing = null; });
  return refreshing;
}

export async function logout() {
  try {
    await request("/auth/browser/logout", { method: "POST", headers: CSRF });
  } finally {
    accessToken = null;
  }
}

// A request with the access token; on 401 the token is refreshed once and the request retried.
// When the session cannot be refreshed, the sign-in dialog opens over the page and the request
// is retried after signing in: the page and what was typed in it stay.
export async function request(path, options = {}, retried = false) {
  const headers = { ...(options.headers || {}) };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401 && !retried) {
    if (await refresh() || await onSignedOut()) return request(path, options, true);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Problem(response.status, body);
  }
  return response;
}

export async function getJSON(path) { return (await request(path)).json(); }

// GET that answers null for a 404 (a panel with nothing to show yet), throws otherwise.
export async function maybeJSON(path) {
  try { return await getJSON(path); } catch (e) { if (e.status === 404) return null; throw e; }
}
