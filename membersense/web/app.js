// MemberSense dashboard: a companion app of the REST API it is served with.
//
// Security rules this file keeps:
// - the bot token is sent once (POST /api/auth/login) and never stored; the session id is
//   the only thing kept, in sessionStorage (this tab only), sent as the existing MemberSense
//   web client sends it (Authorization: <sessionId>), and never put in a URL (the event
//   stream is opened with a one-time ticket instead);
// - every name, message and URL from the API reaches the page as text or as an attribute
//   set through the DOM, never as HTML;
// - logging out (or a 401, or the stream's `end`) removes every piece of guild data from
//   the page and stops every request and timer of the session.
"use strict";

const SESSION_KEY = "membersense.session";
const PAGE_SIZE = 100;
const MESSAGE_PAGE = 50;
const AVATAR_SIZE = "64"; // Discord's CDN takes ?size= (a power of two)
/** Tries of one message after a network error, 502 or 504 (same Idempotency-Key each time). */
const SEND_RETRIES = 2;
/** The long-poll's wait (the API's maximum). */
const POLL_WAIT_S = 25;
/** How long the page long-polls after a stream could not be opened, before trying one again. */
const POLL_MODE_MS = 60_000;
/** The wait between two immediate polls while the server has no room for a waiting one. */
const BUSY_POLL_MIN_S = 5;
/** The longest wait between two reconnection attempts. */
const MAX_BACKOFF_MS = 30_000;
/** The stream's own reconnection hint (`retry: 1000` after EVENT_STREAM_MAX_SECONDS). */
const RECONNECT_MS = 1000;

const $ = (id) => document.getElementById(id);

/** Everything known about the logged-in guild; reset() forgets it all. */
const state = {
  sessionId: sessionStorage.getItem(SESSION_KEY),
  // Bumped by reset(): an answer that arrives for an earlier session is dropped.
  generation: 0,
  server: null, // the login answer's serverName, memberCount, iconURL, guildId
  members: [], // ordered by id, as the API orders them
  memberById: new Map(),
  membersEtag: null,
  roleSignature: "",
  channels: [],
  channelById: new Map(),
  filtered: [],
  page: 0,
  channelId: null,
  messages: [], // of the open channel, oldest first
  messageById: new Map(),
  loadingOlder: false,
  unread: new Set(), // channels with messages that came live while another was open
  noSend: new Map(), // channel id → why the bot cannot send there (learnt from a 403)
  draft: null, // {channelId, content, key}: a message whose Idempotency-Key a retry reuses
  sending: false,
  sendBlockedUntil: 0,
  sendTimer: null,
  loads: 0, // REST reads under way; live events wait for them in `queue`
  queue: [],
  membersTimer: null,
  rolesTimer: null,
  live: null, // the live-updates connection (see "live updates" below)
  timers: new Set(),
};

// -- talking to the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** One API request: {body, response} when it succeeded (2xx or 304), else an ApiError. */
async function call(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.sessionId && path !== "/api/auth/login") headers.Authorization = state.sessionId;
  if (options.body) headers["Content-Type"] = "application/json";
  const generation = state.generation;
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "Cannot reach the MemberSense server. Check your connection; the page retries when you act again.");
  }
  let body = null;
  // Read to its end even when empty: an unread body counts as a cancelled request.
  if (response.status === 204 || response.status === 304) await response.text().catch(() => "");
  else body = await response.json().catch(() => null);
  if (response.ok || response.status === 304) return { body, response };
  const retry = Number((body && body.retryAfter) || response.headers.get("Retry-After") || 0);
  const error = new ApiError(response.status, (body && body.error) || `HTTP ${response.status}`, retry);
  // A 401 of a session already gone (logged out, then in again) says nothing of this one.
  if (response.status === 401 && path !== "/api/auth/login" && generation === state.generation) {
    signedOut("Your session has ended (logged out elsewhere, or idle too long). Log in again.");
  }
  throw error;
}

async function api(path, options = {}) {
  return (await call(path, options)).body;
}

/** A sentence for an error, saying what to do next. */
function explain(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message}`;
  switch (error.status) {
    case 0: return error.message;
    case 429: return `Too many requests.${retryIn(error)}`;
    case 503: return `${sentence(error.message)}${retryIn(error)}`;
    case 504: return `Discord did not answer in time.${retryIn(error)}`;
    default: return error.message;
  }
}

function retryIn(error) {
  return error.retryAfter ? ` Try again in ${Math.ceil(error.retryAfter)} s.` : " Try again in a moment.";
}

function sentence(text) {
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

/** setTimeout that reset() cancels. */
function later(ms, callback) {
  const timer = setTimeout(() => { state.timers.delete(timer); callback(); }, ms);
  state.timers.add(timer);
  return timer;
}

function cancel(timer) {
  if (timer === null || timer === undefined) return;
  clearTimeout(timer);
  state.timers.delete(timer);
}

/** Snowflakes (decimal, no leading zeros) in numeric order, without BigInt. */
function compareIds(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/** Where *id* goes in *list* (sorted by id) to keep it sorted. */
function insertionPoint(list, id) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (compareIds(list[middle].id, id) < 0) low = middle + 1;
    else high = middle;
  }
  return low;
}

// -- small DOM helpers (text only) ----------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key in node && key !== "list") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function sized(url, size) {
  try {
    const parsed = new URL(url, location.href);
    parsed.searchParams.set("size", size);
    return parsed.href;
  } catch (error) {
    return "";
  }
}

function avatar(url, cls = "avatar") {
  const src = url ? sized(url, AVATAR_SIZE) : "";
  return src ? el("img", { class: cls, src, alt: "", width: 40, height: 40, loading: "lazy", decoding: "async" })
             : el("span", { class: cls, "aria-hidden": "true" });
}

function setStatus(id, text, isError = false) {
  const node = $(id);
  node.textContent = text || "";
  node.classList.toggle("error", Boolean(isError));
}

function showNotice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

const numberFormat = new Intl.NumberFormat();
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// -- session ------------------------------------------------------------------------

function showServer() {
  const server = state.server || {};
  $("server-name").textContent = server.serverName || "";
  const count = server.memberCount ?? (state.members.length || null);
  $("member-count").textContent = count === null ? "" : `${numberFormat.format(count)} members`;
  $("server-icon").hidden = !server.iconURL;
  if (server.iconURL) $("server-icon").src = sized(server.iconURL, AVATAR_SIZE);
  else $("server-icon").removeAttribute("src");
  $("server").hidden = false;
  $("logout").hidden = false;
}

/** Keep the server card in this tab's history entry (not in storage), for a reload. */
function rememberServer() {
  history.replaceState({ ...(history.state || {}), server: state.server }, "");
}

/** Forget the guild: data, DOM, view state, requests, timers. The page is as before a login. */
function reset() {
  stopLive();
  for (const timer of state.timers) clearTimeout(timer);
  Object.assign(state, {
    sessionId: null, generation: state.generation + 1, server: null, members: [],
    memberById: new Map(), membersEtag: null, roleSignature: "", channels: [],
    channelById: new Map(), filtered: [], page: 0, channelId: null, messages: [],
    messageById: new Map(), loadingOlder: false, unread: new Set(), noSend: new Map(),
    draft: null, sending: false, sendBlockedUntil: 0, sendTimer: null, loads: 0, queue: [],
    membersTimer: null, rolesTimer: null, live: null, timers: new Set(),
  });
  sessionStorage.removeItem(SESSION_KEY);
  history.replaceState(null, "", location.pathname);
  for (const id of ["member-list", "channel-groups", "message-list"]) $(id).replaceChildren();
  for (const id of ["server-name", "member-count", "page-info", "channel-topic", "live-text",
                    "send-note", "send-error", "send-status"]) $(id).textContent = "";
  for (const id of ["members-status", "channels-status", "messages-status"]) setStatus(id, "");
  $("channel-title").textContent = "Pick a channel";
  $("role-filter").replaceChildren(el("option", { value: "", text: "All roles" }));
  $("member-search").value = "";
  $("send-text").value = "";
  $("send-text").disabled = false;
  $("send-text").readOnly = false;
  $("send-button").disabled = false;
  $("server-icon").removeAttribute("src");
  $("live").removeAttribute("data-state");
  for (const id of ["server", "server-icon", "logout", "app-view", "older", "send", "send-note", "to-send", "live"]) $(id).hidden = true;
  $("login-view").hidden = false;
}

function signedOut(message) {
  reset();
  showNotice(message || "");
  $("token").focus();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = ""; // sent once, kept nowhere
  $("login-error").hidden = true;
  showNotice("");
  if (!token) return;
  $("login-button").disabled = true;
  $("login-button").textContent = "Logging in…";
  try {
    const answer = await api("/api/auth/login", { method: "POST", body: JSON.stringify({ token }) });
    state.sessionId = answer.sessionId;
    sessionStorage.setItem(SESSION_KEY, answer.sessionId);
    state.server = {
      serverName: answer.serverName, memberCount: answer.memberCount,
      iconURL: answer.iconURL, guildId: answer.guildId,
    };
    history.replaceState({ server: state.server }, "", "#members");
    await start();
  } catch (error) {
    $("login-error").textContent = explain(error);
    $("login-error").hidden = false;
    $("token").focus();
  } finally {
    $("login-button").disabled = false;
    $("login-button").textContent = "Log in";
  }
});

$("logout").addEventListener("click", async () => {
  const had = state.sessionId;
  reset(); // nothing of the guild stays on the page, whatever the server answers
  if (had) {
    fetch("/api/auth/logout", { method: "POST", headers: { Authorization: had } })
      .then((response) => response.text()).catch(() => {});
  }
  showNotice("");
  $("token").focus();
});

// -- views and tabs -----------------------------------------------------------------

function route() {
  const hash = location.hash;
  const match = /^#channels(?:\/(\d+))?$/.exec(hash);
  if (match) {
    selectTab("channels");
    if (match[1] && match[1] !== state.channelId && state.channelById.has(match[1])) {
      openChannel(match[1]);
    }
  } else {
    selectTab("members");
  }
}

function selectTab(name) {
  for (const tab of ["members", "channels"]) {
    const selected = tab === name;
    $(`tab-${tab}`).setAttribute("aria-selected", String(selected));
    $(`tab-${tab}`).tabIndex = selected ? 0 : -1;
    $(`${tab}-view`).hidden = !selected;
  }
}

for (const tab of ["members", "channels"]) {
  $(`tab-${tab}`).addEventListener("click", () => {
    const target = tab === "channels" && state.channelId ? `#channels/${state.channelId}` : `#${tab}`;
    if (location.hash !== target) history.pushState(history.state, "", target);
    route();
  });
}
// Arrow keys move between tabs, as in any tab list.
document.querySelector(".tabs").addEventListener("keydown", (event) => {
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  const next = $("tab-members").getAttribute("aria-selected") === "true" ? "channels" : "members";
  $(`tab-${next}`).click();
  $(`tab-${next}`).focus();
});
window.addEventListener("popstate", () => { if (state.sessionId) route(); });
window.addEventListener("offline", () => showNotice("You are offline: what is shown may be out of date."));
window.addEventListener("online", () => {
  showNotice("");
  reconnectNow();
});

async function start() {
  const generation = state.generation;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  showServer();
  setStatus("members-status", "Loading members…");
  setStatus("channels-status", "Loading channels…");
  // Where the guild's events stand now, before anything is read: the stream then starts
  // there, so nothing that happens while the lists load is missed (what is read twice is
  // applied twice, harmlessly).
  const cursor = await eventCursor();
  if (generation !== state.generation) return; // signed out meanwhile (a 401, a logout)
  const [members, channels] = await Promise.allSettled([loadMembers(), loadChannels()]);
  if (generation !== state.generation) return;
  for (const result of [members, channels]) {
    if (result.status === "rejected") showNotice(explain(result.reason));
  }
  showServer();
  route();
  startLive(cursor);
}

// -- members ------------------------------------------------------------------------

/** Read the whole member list; with *revalidate*, only if it changed (ETag). */
async function loadMembers({ revalidate = false } = {}) {
  const generation = state.generation;
  const headers = revalidate && state.membersEtag ? { "If-None-Match": state.membersEtag } : {};
  let result;
  try {
    result = await loading(() => call("/api/members", { headers }));
  } catch (error) {
    if (generation === state.generation) setStatus("members-status", explain(error), true);
    throw error;
  }
  if (generation !== state.generation || result.response.status === 304) return;
  state.membersEtag = result.response.headers.get("ETag");
  setMembers(result.body);
}

function setMembers(list) {
  state.members = list;
  // The whole list: its length is the count (live joins and leaves then keep it).
  if (state.server) state.server.memberCount = list.length;
  state.memberById = new Map(list.map((m) => [m.id, m]));
  for (const m of list) m.search = searchText(m);
  refreshMembers(false);
}

function searchText(member) {
  return `${member.displayName || ""}\n${member.username || ""}`.toLowerCase();
}

/** Roles and the list again, after the members changed; the page shown stays. */
function refreshMembers(toFirstPage) {
  const counts = new Map();
  for (const m of state.members) {
    for (const role of m.roles || []) if (role !== "@everyone") counts.set(role, (counts.get(role) || 0) + 1);
  }
  const roles = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const signature = JSON.stringify(roles);
  if (signature !== state.roleSignature) { // rebuilt only when it changed: an open menu stays open
    state.roleSignature = signature;
    const chosen = $("role-filter").value;
    $("role-filter").replaceChildren(
      el("option", { value: "", text: "All roles" }),
      ...roles.map(([name, count]) => el("option", { value: name, text: `${name} (${numberFormat.format(count)})` })));
    if (counts.has(chosen)) $("role-filter").value = chosen;
  }
  filterMembers(toFirstPage);
}

function filterMembers(toFirstPage = true) {
  const needle = $("member-search").value.trim().toLowerCase();
  const role = $("role-filter").value;
  state.filtered = state.members.filter((m) =>
    (!needle || m.search.includes(needle)) && (!role || (m.roles || []).includes(role)));
  if (toFirstPage) state.page = 0;
  renderMembers();
}

function renderMembers() {
  const total = state.filtered.length;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const shown = state.filtered.slice(start, start + PAGE_SIZE);
  $("member-list").replaceChildren(...shown.map(memberRow));
  if (!state.members.length) setStatus("members-status", "This server has no members to show.");
  else if (!total) setStatus("members-status", "No member matches the search and role filter.");
  else setStatus("members-status", `${numberFormat.format(total)} of ${numberFormat.format(state.members.length)} members`);
  $("page-info").textContent = total ? `${numberFormat.format(start + 1)}–${numberFormat.format(start + shown.length)} of ${numberFormat.format(total)}` : "";
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = state.page >= pages - 1;
}

function memberRow(m) {
  const dot = el("span", { class: "dot", "aria-hidden": "true" });
  if (m.roleColor) dot.style.backgroundColor = m.roleColor;
  return el("li", { class: "member", "data-member-id": m.id },
    avatar(m.avatar),
    el("div", { class: "who" },
      el("strong", { text: m.displayName || m.username }, m.bot ? el("span", { class: "badge", text: "BOT" }) : null),
      el("span", { text: m.username })),
    el("div", { class: "role", title: (m.roles || []).join(", ") }, dot, el("span", { text: m.role || "" })),
    el("time", { class: "joined", dateTime: m.joinedAt || "", text: m.joinedAt ? `Joined ${dateFormat.format(new Date(m.joinedAt))}` : "" }));
}

let searchTimer = null;
$("member-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(filterMembers, 120); // one filter per pause in typing
});
$("role-filter").addEventListener("change", () => {
  clearTimeout(searchTimer); // this filters with the search text too; a late timer would go back to page 1
  filterMembers();
});
$("prev-page").addEventListener("click", () => { state.page -= 1; renderMembers(); });
$("next-page").addEventListener("click", () => { state.page += 1; renderMembers(); });

// Live member changes: applied to the list at once, shown after a short pause, so a burst
// of joins filters a large list once rather than once per member.
function membersChanged() {
  if (state.membersTimer !== null) return;
  state.membersTimer = later(100, () => { state.membersTimer = null; refreshMembers(false); });
}

function upsertMember(member) {
  if (!member.id) return;
  member.search = searchText(member);
  const known = state.memberById.has(member.id);
  const at = insertionPoint(state.members, member.id);
  if (known) state.members[at] = member;
  else {
    state.members.splice(at, 0, member);
    if (state.server && typeof state.server.memberCount === "number") state.server.memberCount += 1;
  }
  state.memberById.set(member.id, member);
  membersChanged();
  showServer();
}

function removeMember({ id }) {
  if (!state.memberById.has(id)) return;
  state.memberById.delete(id);
  state.members = state.members.filter((m) => m.id !== id);
  if (state.server && typeof state.server.memberCount === "number") state.server.memberCount -= 1;
  membersChanged();
  showServer();
}

function updateGuild(guild) {
  state.server = {
    ...(state.server || {}),
    serverName: guild.name ?? state.server?.serverName,
    memberCount: guild.memberCount ?? state.server?.memberCount,
    iconURL: guild.iconURL === undefined ? state.server?.iconURL : guild.iconURL,
  };
  rememberServer();
  showServer();
  // A guild update is also how role changes arrive: members show role names and colours,
  // so the list is read again (nothing comes back when it did not change).
  cancel(state.rolesTimer);
  state.rolesTimer = later(1000, () => loadMembers({ revalidate: true }).catch(() => {}));
}

// -- channels -----------------------------------------------------------------------

const KIND_LABEL = { text: "#", voice: "🔊", category: "" };

async function loadChannels() {
  const generation = state.generation;
  let list;
  try {
    list = await loading(() => api("/api/channels?type=all"));
  } catch (error) {
    if (generation === state.generation) setStatus("channels-status", explain(error), true);
    throw error;
  }
  if (generation !== state.generation) return;
  setChannels(list);
}

function setChannels(list) {
  state.channels = list;
  state.channelById = new Map(list.map((c) => [c.id, c]));
  renderChannels();
}

function renderChannels() {
  const list = state.channels;
  // Keyboard focus on a channel stays there when the list is drawn again.
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.channelId : undefined;
  const byPosition = (a, b) => (a.position - b.position) || compareIds(a.id, b.id);
  const categories = list.filter((c) => c.type === "category").sort(byPosition);
  const inside = (parent) => list.filter((c) => c.type !== "category" && (c.parentId || null) === parent)
    .sort((a, b) => (a.type === "voice") - (b.type === "voice") || byPosition(a, b));
  const known = new Set(categories.map((c) => c.id));
  const orphans = list.filter((c) => c.type !== "category" && c.parentId && !known.has(c.parentId));
  const groups = [{ name: null, channels: [...inside(null), ...orphans] },
    ...categories.map((c) => ({ name: c.name, channels: inside(c.id) }))]
    .filter((g) => g.channels.length);
  $("channel-groups").replaceChildren(...groups.flatMap((group) => [
    group.name ? el("h3", { text: group.name }) : null,
    el("ul", {}, ...group.channels.map(channelItem)),
  ].filter(Boolean)));
  setStatus("channels-status", groups.length ? "" : "This server has no channels the bot can see.");
  if (focused) document.querySelector(`.channel[data-channel-id="${CSS.escape(focused)}"]`)?.focus();
}

function channelItem(channel) {
  const readable = channel.type === "text";
  const unread = state.unread.has(channel.id);
  const button = el("button", {
    type: "button", class: `channel ${channel.type}${unread ? " unread" : ""}`, disabled: !readable,
    title: readable ? (channel.topic || "") : `${channel.type} channel: no messages to read`,
    "aria-current": channel.id === state.channelId ? "true" : "false",
  }, el("span", { class: "kind", "aria-hidden": "true", text: KIND_LABEL[channel.type] ?? "•" }),
  el("span", { text: channel.name }),
  readable ? null : el("span", { class: "visually-hidden", text: ` (${channel.type})` }),
  unread ? el("span", { class: "unread-dot", "aria-hidden": "true" }) : null,
  unread ? el("span", { class: "visually-hidden", text: " (new messages)" }) : null);
  button.dataset.channelId = channel.id;
  if (readable) {
    button.addEventListener("click", () => {
      history.pushState(history.state, "", `#channels/${channel.id}`);
      openChannel(channel.id);
    });
  }
  return el("li", {}, button);
}

function upsertChannel(channel) {
  if (!channel.id) return;
  const index = state.channels.findIndex((c) => c.id === channel.id);
  if (index >= 0) state.channels[index] = channel;
  else state.channels.push(channel);
  state.channelById.set(channel.id, channel);
  // Its permissions may have changed: let the next send find out again.
  state.noSend.delete(channel.id);
  renderChannels();
  if (channel.id === state.channelId) {
    $("channel-title").textContent = `#${channel.name}`;
    $("channel-topic").textContent = channel.topic || "";
    renderSendBox();
  }
}

function removeChannel({ id }) {
  if (!state.channelById.has(id)) return;
  state.channels = state.channels.filter((c) => c.id !== id);
  state.channelById.delete(id);
  state.unread.delete(id);
  renderChannels();
  if (id === state.channelId) {
    closeChannel();
    setStatus("messages-status", "This channel was deleted.");
    history.replaceState(history.state, "", "#channels");
  }
}

// -- messages -----------------------------------------------------------------------

function closeChannel() {
  state.channelId = null;
  state.messages = [];
  state.messageById = new Map();
  $("channel-title").textContent = "Pick a channel";
  $("channel-topic").textContent = "";
  $("message-list").replaceChildren();
  $("older").hidden = true;
  renderSendBox();
}

async function openChannel(channelId) {
  const channel = state.channelById.get(channelId);
  if (!channel) return;
  const switched = state.channelId !== channelId;
  state.channelId = channelId;
  state.messages = [];
  state.messageById = new Map();
  if (state.unread.delete(channelId)) renderChannels();
  for (const button of document.querySelectorAll(".channel")) {
    button.setAttribute("aria-current", String(button.dataset.channelId === channelId));
  }
  $("channel-title").textContent = `#${channel.name}`;
  $("channel-topic").textContent = channel.topic || "";
  $("message-list").replaceChildren();
  $("older").hidden = true;
  setStatus("messages-status", "Loading messages…");
  if (switched) {
    $("send-error").textContent = "";
    $("send-status").textContent = "";
  }
  renderSendBox();
  await loadMessages(null);
}

async function loadMessages(before) {
  const channelId = state.channelId;
  const generation = state.generation;
  const query = new URLSearchParams({ channelId, limit: String(MESSAGE_PAGE) });
  if (before) query.set("before", before);
  let page;
  try {
    // Live events wait while the page loads, and apply on top of it afterwards.
    page = await loading(() => api(`/api/messages?${query}`));
  } catch (error) {
    if (channelId === state.channelId && generation === state.generation) {
      setStatus("messages-status", explain(error), true);
    }
    return;
  }
  if (channelId !== state.channelId || generation !== state.generation) return; // another channel was opened
  const older = page.slice().reverse(); // the API answers newest first
  const scroller = $("message-scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  if (!before) state.messageById = new Map();
  state.messages = before ? [...older, ...state.messages] : older;
  for (const m of older) state.messageById.set(m.id, m);
  $("message-list").replaceChildren(...state.messages.map(messageItem));
  $("older").hidden = page.length < MESSAGE_PAGE;
  setStatus("messages-status", state.messages.length ? "" : "No messages in this channel yet.");
  // The newest stay at the bottom; loading older ones keeps what was on screen in place.
  scroller.scrollTop = before ? scroller.scrollHeight - fromBottom : scroller.scrollHeight;
}

$("older").addEventListener("click", async () => {
  if (state.loadingOlder || !state.messages.length) return;
  state.loadingOlder = true;
  $("older").disabled = true;
  try {
    await loadMessages(state.messages[0].id);
  } finally {
    state.loadingOlder = false;
    $("older").disabled = false;
  }
});

const MENTION = /<(@!?|@&|#)(\d+)>/g;

/** Message text with <@id>, <#id> and <@&id> shown as names, every part as text. */
function richText(content) {
  const parts = [];
  let last = 0;
  for (const match of content.matchAll(MENTION)) {
    if (match.index > last) parts.push(content.slice(last, match.index));
    const [raw, kind, id] = match;
    const label = mentionLabel(kind, id);
    parts.push(label ? el("span", { class: "mention", title: raw, text: label }) : raw);
    last = match.index + raw.length;
  }
  if (last < content.length) parts.push(content.slice(last));
  return parts;
}

/** What a mention shows: @name, #channel, @role; null for a channel the bot cannot see. */
function mentionLabel(kind, id) {
  if (kind === "#") {
    const channel = state.channelById.get(id);
    return channel ? `#${channel.name}` : null;
  }
  if (kind === "@&") return "@role";
  const member = state.memberById.get(id);
  return member ? `@${member.displayName || member.username}` : "@unknown-user";
}

/** *content* as one plain string with mentions as names (for previews). */
function plainText(content) {
  return content.replace(MENTION, (raw, kind, id) => mentionLabel(kind, id) || raw);
}

function authorName(author) {
  const member = state.memberById.get(author.id);
  return (member && member.displayName) || author.name || author.username;
}

function messageItem(m) {
  const when = new Date(m.timestamp);
  const reply = m.replyTo ? replyLine(m.replyTo) : null;
  const images = (m.attachments || []).filter((a) => (a.contentType || "").startsWith("image/"));
  const files = (m.attachments || []).filter((a) => !images.includes(a));
  return el("li", { class: "message", id: `message-${m.id}` },
    avatar(m.author.avatar),
    el("div", { class: "body" },
      reply,
      el("header", {},
        el("strong", { text: authorName(m.author) }),
        el("time", { dateTime: when.toISOString(), text: timeFormat.format(when) }),
        m.editedTimestamp ? el("span", { class: "edited", title: `Edited ${timeFormat.format(new Date(m.editedTimestamp))}`, text: "(edited)" }) : null),
      m.content ? el("div", { class: "text" }, ...richText(m.content)) : null,
      images.length || files.length ? el("div", { class: "attachments" },
        ...images.map((a) => el("a", { href: a.url, target: "_blank", rel: "noopener noreferrer", title: a.filename },
          el("img", { src: a.url, alt: a.filename || "image attachment", loading: "lazy", decoding: "async" }))),
        ...files.map((a) => el("a", { href: a.url, target: "_blank", rel: "noopener noreferrer",
          text: `📎 ${a.filename}${a.size ? ` (${formatSize(a.size)})` : ""}` }))) : null,
      m.embeds ? el("div", { class: "embeds", text: m.embeds === 1 ? "1 embed" : `${m.embeds} embeds` }) : null));
}

function replyLine(id) {
  const target = state.messageById.get(id);
  if (!target) return el("div", { class: "reply", text: "↪ reply to an earlier message" });
  const snippet = plainText(target.content || "").slice(0, 80);
  const link = el("a", { href: `#message-${id}`, text: `↪ ${authorName(target.author)}: ${snippet}` });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById(`message-${id}`)?.scrollIntoView({ block: "center" });
  });
  return el("div", { class: "reply" }, link);
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A message of the open channel, shown once in id order, whether it comes from our own
 *  POST or from the stream (in either order); another channel's marks that one unread. */
function addMessage(m, { own = false } = {}) {
  if (!m || !m.id) return;
  if (m.channelId !== state.channelId) {
    if (!own && m.channelId && state.channelById.has(m.channelId) && !state.unread.has(m.channelId)) {
      state.unread.add(m.channelId);
      renderChannels();
    }
    return;
  }
  if (state.messageById.has(m.id)) return;
  const scroller = $("message-scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const at = insertionPoint(state.messages, m.id);
  const next = state.messages[at];
  state.messages.splice(at, 0, m);
  state.messageById.set(m.id, m);
  const item = messageItem(m);
  const nextItem = next && document.getElementById(`message-${next.id}`);
  if (nextItem) nextItem.before(item);
  else $("message-list").append(item);
  setStatus("messages-status", "");
  if (own || atBottom) scroller.scrollTop = scroller.scrollHeight; // else the reader stays where they are
}

function updateMessage(m) {
  const old = state.messageById.get(m.id);
  if (!old || m.channelId !== state.channelId) return;
  // Discord may send an edit as part of a message (an embed appearing): without an author,
  // keep what was known and take only what changed.
  const partial = !m.author || !m.author.id || m.author.id === "0";
  const merged = partial
    ? { ...old, content: m.content || old.content, editedTimestamp: m.editedTimestamp ?? old.editedTimestamp,
        embeds: m.embeds || old.embeds }
    : { ...m, timestamp: m.timestamp ?? old.timestamp };
  state.messages[state.messages.indexOf(old)] = merged;
  state.messageById.set(m.id, merged);
  document.getElementById(`message-${m.id}`)?.replaceWith(messageItem(merged));
}

function removeMessage({ id, channelId }) {
  if (channelId && channelId !== state.channelId) return;
  if (!state.messageById.has(id)) return;
  state.messages = state.messages.filter((x) => x.id !== id);
  state.messageById.delete(id);
  document.getElementById(`message-${id}`)?.remove();
  if (!state.messages.length) setStatus("messages-status", "No messages in this channel yet.");
}

// -- sending ------------------------------------------------------------------------
// POST /api/messages with an Idempotency-Key per message: the key is made when a text is
// first sent in a channel and kept until it is posted, so a retry after a network error,
// a 502 or a 504 (automatic, or the user pressing Send again) cannot post it twice.

function newIdempotencyKey() {
  // crypto.randomUUID() exists only on https and localhost; getRandomValues everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dashboard-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The send box as the open channel allows: hidden without one, disabled (and why) where
 *  the bot may not post, busy while sending, held back while the server asks to wait. */
function renderSendBox() {
  const channelId = state.channelId;
  const channel = channelId && state.channelById.get(channelId);
  $("send").hidden = !channel;
  $("to-send").hidden = !channel;
  if (!channel) return;
  // The channel list says where the bot may post; a 403 since (permissions changed, or a
  // server that does not say) is remembered per channel until the channel changes.
  const refused = state.noSend.get(channelId)
    ?? (channel.canSend === false ? "The bot has no permission to post in this channel." : undefined);
  const waiting = Date.now() < state.sendBlockedUntil;
  $("send-text").disabled = Boolean(refused);
  $("send-text").readOnly = state.sending;
  $("send-text").placeholder = `Message #${channel.name}`;
  $("send-button").disabled = Boolean(refused) || state.sending || waiting;
  $("send-button").textContent = state.sending ? "Sending…" : "Send";
  $("send-note").hidden = !refused;
  $("send-note").textContent = refused
    ? `Cannot send here: the bot has no permission to post in #${channel.name}.` : "";
  $("send-note").title = refused || ""; // the server's own words
}

function holdSending(seconds) {
  state.sendBlockedUntil = Date.now() + seconds * 1000;
  cancel(state.sendTimer);
  state.sendTimer = later(seconds * 1000, () => {
    state.sendTimer = null;
    renderSendBox();
    if ($("send-error").textContent) $("send-status").textContent = "You can send again now.";
  });
}

$("to-send").addEventListener("click", () => {
  if ($("send-text").disabled) $("send-note").scrollIntoView({ block: "nearest" });
  else $("send-text").focus();
});

$("send-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("send").requestSubmit();
  }
});

$("send").addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});

async function sendMessage() {
  const channelId = state.channelId;
  const content = $("send-text").value;
  const mayPost = state.channelById.get(channelId)?.canSend !== false && !state.noSend.has(channelId);
  if (!channelId || state.sending || !mayPost || Date.now() < state.sendBlockedUntil) return;
  if (!content.trim()) {
    $("send-error").textContent = "Write a message first.";
    return;
  }
  const generation = state.generation;
  const draft = state.draft && state.draft.channelId === channelId && state.draft.content === content
    ? state.draft : { channelId, content, key: newIdempotencyKey() };
  state.draft = draft;
  state.sending = true;
  $("send-error").textContent = "";
  $("send-status").textContent = "Sending…";
  renderSendBox();
  try {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const created = await api("/api/messages", {
          method: "POST", headers: { "Idempotency-Key": draft.key },
          body: JSON.stringify({ channelId, content }),
        });
        if (generation !== state.generation) return;
        state.draft = null;
        $("send-text").value = "";
        $("send-status").textContent = "";
        addMessage(created, { own: true });
        return;
      } catch (error) {
        if (generation !== state.generation) return;
        const unsure = error instanceof ApiError && [0, 502, 504].includes(error.status);
        if (unsure && attempt < SEND_RETRIES) {
          $("send-status").textContent = `Not confirmed yet; trying again (${attempt + 1} of ${SEND_RETRIES})…`;
          await new Promise((resolve) => later(1000 * (attempt + 1), resolve));
          if (generation !== state.generation) return;
          continue;
        }
        sendFailed(error, channelId);
        return;
      }
    }
  } finally {
    if (generation === state.generation) {
      state.sending = false;
      renderSendBox();
      // Back to the box (the button lost focus while disabled), unless the user went elsewhere.
      const focus = document.activeElement;
      if (!$("send-text").disabled && (!focus || focus === document.body || $("send").contains(focus))) {
        $("send-text").focus();
      }
    }
  }
}

/** Say why a message was not posted, and what to do. */
function sendFailed(error, channelId) {
  $("send-status").textContent = "";
  if (!(error instanceof ApiError)) {
    $("send-error").textContent = `Not sent: ${error.message}`;
    return;
  }
  switch (error.status) {
    case 400:
      state.draft = null;
      $("send-error").textContent = `Not sent: ${sentence(error.message)}`;
      break;
    case 401:
      break; // back at the login already
    case 403:
      // The channel list said the bot may post here (or did not say): it may not, now.
      state.draft = null;
      state.noSend.set(channelId, sentence(error.message));
      break;
    case 404:
      state.draft = null;
      $("send-error").textContent = "Not sent: this channel no longer exists.";
      loadChannels().catch(() => {});
      break;
    case 429:
    case 503: {
      const wait = Math.max(1, Math.ceil(error.retryAfter || 5));
      const why = error.status === 429 ? "too many requests" : sentence(error.message).replace(/\.$/, "");
      $("send-error").textContent = `Not sent: ${why}. Try again in ${wait} s.`;
      holdSending(wait);
      break;
    }
    case 0:
    case 502:
    case 504:
      // After the retries: it may have been posted. Sending the same text again reuses the
      // key, so it is posted at most once.
      $("send-error").textContent = `${error.status === 0 ? "Cannot reach the MemberSense server" : "Discord did not confirm the message"}. `
        + "Press Send to try again: it will not be posted twice.";
      break;
    default:
      $("send-error").textContent = `Not sent: ${sentence(explain(error))}`;
  }
}

// -- live updates -------------------------------------------------------------------
// GET /api/events as Server-Sent Events, opened with a one-time ticket from
// POST /api/events/ticket (EventSource cannot send Authorization, and the session id must
// not go in a URL). A used ticket cannot open another stream, so EventSource's own
// reconnection is never used: on any error or close the stream is closed here, and a new
// ticket opens a new one from the last event seen (&lastEventId=); after `end` too, whose
// ticket request answers 401 when the session is over (back to the login). A stream that ends
// after EVENT_STREAM_MAX_SECONDS is reopened after its `retry:` hint; failures back off.
// A stream that cannot even be opened (503: the server's cap on streams; a host that
// refuses it) falls back to the long-poll GET /api/events/poll for a while, which also
// says what went wrong (401 signs out; 503 while waiting polls are refused too means
// polling at once every few seconds, which holds no place on the server).

const EVENT_HANDLERS = {
  "member.join": upsertMember,
  "member.update": upsertMember,
  "member.leave": removeMember,
  "message.create": (m) => addMessage(m),
  "message.update": updateMessage,
  "message.delete": removeMessage,
  "channel.create": upsertChannel,
  "channel.update": upsertChannel,
  "channel.delete": removeChannel,
  "guild.update": updateGuild,
};

/** Run *read* (a REST read) with live events held back until every read is done. */
async function loading(read) {
  const generation = state.generation;
  state.loads += 1;
  try {
    return await read();
  } finally {
    if (generation === state.generation) {
      state.loads -= 1;
      if (state.loads === 0) drainEvents();
    }
  }
}

function drainEvents() {
  while (state.queue.length && state.loads === 0) {
    const [type, data] = state.queue.shift();
    applyEvent(type, data);
  }
}

/** One live event: applied now, or after the REST reads under way (which it may update). */
function dispatch(type, data) {
  if (type === "reset") {
    state.queue = []; // held back from before the gap: what is read again supersedes them
    reloadEverything();
    return;
  }
  if (!EVENT_HANDLERS[type] || !data || typeof data !== "object") return; // a type this page does not show
  if (state.loads > 0) state.queue.push([type, data]);
  else applyEvent(type, data);
}

function applyEvent(type, data) {
  try {
    EVENT_HANDLERS[type](data);
  } catch (error) {
    console.warn(`live event ${type} skipped: ${error.message}`); // one odd event stops nothing
  }
}

/** `reset`: what happened meanwhile is no longer in the server's buffer: read it all again
 *  (the bot may be reconnecting to Discord: a busy answer is tried again when it says). */
function reloadEverything() {
  retrying(loadMembers);
  retrying(loadChannels).then(() => {
    if (state.channelId && !state.channelById.has(state.channelId)) removeChannel({ id: state.channelId });
  });
  if (state.channelId) loadMessages(null);
}

/** *read()*, tried up to *tries* times while it fails with a network error, 429 or 5xx. */
async function retrying(read, tries = 4) {
  const generation = state.generation;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await read();
    } catch (error) {
      const busy = error instanceof ApiError && (error.status === 0 || error.status === 429 || error.status >= 500);
      if (!busy || attempt >= tries || generation !== state.generation) return undefined;
      await new Promise((resolve) => later(error.retryAfter ? error.retryAfter * 1000 : backoff(attempt), resolve));
      if (generation !== state.generation) return undefined;
    }
  }
}

/** Where the guild's events stand now (the long-poll's X-Event-Cursor without waiting). */
async function eventCursor() {
  try {
    const { response } = await call("/api/events/poll?wait=0");
    return response.headers.get("X-Event-Cursor");
  } catch (error) {
    return null; // the stream then starts from when it opens
  }
}

function startLive(cursor) {
  stopLive();
  state.live = {
    generation: state.generation, lastId: cursor || null, attempts: 0, mode: "stream",
    pollUntil: 0, busy: false, source: null, controller: null, timer: null,
  };
  connectLive(state.live);
}

function stopLive() {
  const live = state.live;
  if (!live) return;
  live.stopped = true;
  cancel(live.timer);
  if (live.source) live.source.close();
  if (live.controller) live.controller.abort();
  state.live = null;
}

function current(live) {
  return state.live === live && !live.stopped && live.generation === state.generation;
}

/** The live indicator in the header: the words say the state, the dot repeats it. */
function setLive(kind, text) {
  $("live").hidden = false;
  $("live").dataset.state = kind;
  $("live-text").textContent = text;
}

function connectLive(live) {
  if (!current(live)) return;
  live.timer = null;
  if (live.mode === "poll" && Date.now() < live.pollUntil) pollEvents(live);
  else openStream(live);
}

function scheduleLive(live, ms) {
  cancel(live.timer);
  live.timer = later(ms, () => connectLive(live));
}

/** Doubling waits with jitter, from 1 s to MAX_BACKOFF_MS. */
function backoff(attempts) {
  const base = Math.min(MAX_BACKOFF_MS, RECONNECT_MS * 2 ** Math.max(0, attempts - 1));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** A request of the live connection failed: sign out (401), wait as told (429), or back off. */
function liveFailed(live, error) {
  if (!current(live) || error.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) return; // call() signed out
  live.attempts += 1;
  const wait = error instanceof ApiError && error.retryAfter ? error.retryAfter * 1000 : backoff(live.attempts);
  setLive("offline", error instanceof ApiError && error.status === 0
    ? "Offline: live updates resume when the server can be reached"
    : `Live updates paused: ${explain(error)}`);
  scheduleLive(live, wait);
}

function reconnectNow() {
  const live = state.live;
  if (!live || !current(live) || live.source || live.controller) return; // connected, or connecting
  live.attempts = 0;
  scheduleLive(live, 0);
}

async function openStream(live) {
  live.mode = "stream";
  if (!$("live").dataset.state || live.attempts > 0) setLive(live.attempts ? "reconnecting" : "connecting", live.attempts ? "Reconnecting…" : "Connecting…");
  let ticket;
  try {
    ({ ticket } = await api("/api/events/ticket", { method: "POST" }));
  } catch (error) {
    liveFailed(live, error);
    return;
  }
  if (!current(live)) return;
  const query = new URLSearchParams({ ticket });
  if (live.lastId) query.set("lastEventId", live.lastId);
  const source = new EventSource(`/api/events?${query}`);
  live.source = source;
  let openedAt = 0;
  source.onopen = () => {
    openedAt = Date.now();
    setLive("live", "Live");
  };
  const onEvent = (type) => (event) => {
    if (live.source !== source || !current(live)) return;
    if (event.lastEventId) live.lastId = event.lastEventId;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      return; // a malformed event is skipped
    }
    dispatch(type, data);
  };
  for (const type of [...Object.keys(EVENT_HANDLERS), "reset"]) source.addEventListener(type, onEvent(type));
  source.addEventListener("end", () => {
    // The session ended, or this server is stopping (the frame's reason says which): a new
    // ticket is the answer that holds either way. A 401 signs out; a ticket opens a stream,
    // on another instance in Redis mode.
    if (live.source !== source || !current(live)) return;
    source.close();
    live.source = null;
    live.attempts = 0;
    openStream(live);
  });
  source.onerror = () => {
    if (live.source !== source) return;
    source.close(); // never EventSource's own retry: its ticket is used up
    live.source = null;
    if (!current(live)) return;
    if (openedAt && Date.now() - openedAt >= RECONNECT_MS) {
      // A stream that ran (its time limit, a network blip): reopen from the last event.
      live.attempts = 0;
      scheduleLive(live, Math.round(RECONNECT_MS * (1 + Math.random() * 0.5)));
    } else if (openedAt) {
      live.attempts += 1; // opened and dropped at once: back off
      setLive("reconnecting", "Reconnecting…");
      scheduleLive(live, backoff(live.attempts));
    } else {
      // Refused or unreachable: the long-poll carries on and says why.
      live.mode = "poll";
      live.busy = false;
      live.pollUntil = Date.now() + POLL_MODE_MS;
      connectLive(live);
    }
  };
}

async function pollEvents(live) {
  const wait = live.busy ? 0 : POLL_WAIT_S;
  const query = new URLSearchParams({ wait: String(wait) });
  if (live.lastId) query.set("after", live.lastId);
  const controller = new AbortController();
  live.controller = controller;
  // The waiting poll is the live connection now (after a failure, it is until it answers).
  if (!live.attempts) setLive("polling", live.busy ? "Live (polling: the server is busy)" : "Live (polling)");
  let result;
  try {
    result = await call(`/api/events/poll?${query}`, { signal: controller.signal });
  } catch (error) {
    if (live.controller === controller) live.controller = null;
    if (current(live) && error instanceof ApiError && error.status === 503) {
      // No room for a waiting poll either: poll without waiting, every few seconds.
      live.busy = true;
      live.attempts = 0;
      setLive("polling", "Live (polling: the server is busy)");
      scheduleLive(live, Math.max(BUSY_POLL_MIN_S, error.retryAfter || 0) * 1000);
      return;
    }
    liveFailed(live, error);
    return;
  }
  if (live.controller === controller) live.controller = null;
  if (!current(live)) return;
  live.attempts = 0;
  setLive("polling", live.busy ? "Live (polling: the server is busy)" : "Live (polling)");
  const body = result.body;
  if (body && !Array.isArray(body) && body.reset) {
    live.lastId = body.cursor || live.lastId;
    dispatch("reset", {});
  } else {
    for (const event of body || []) {
      live.lastId = event.id;
      dispatch(event.type, event.data);
    }
  }
  live.lastId = result.response.headers.get("X-Event-Cursor") || live.lastId;
  scheduleLive(live, live.busy ? BUSY_POLL_MIN_S * 1000 : 0);
}

// -- start --------------------------------------------------------------------------

if (state.sessionId) {
  state.server = (history.state && history.state.server) || null;
  start().catch((error) => showNotice(explain(error)));
} else {
  reset();
}
