// MemberSense dashboard: a companion app of the REST API it is served with.
//
// Security rules this file keeps:
// - the bot token is sent once (POST /api/auth/login) and never stored; the session id is
//   the only thing kept, in sessionStorage (this tab only), sent as the existing MemberSense
//   web client sends it (Authorization: <sessionId>);
// - every name, message and URL from the API reaches the page as text or as an attribute
//   set through the DOM, never as HTML;
// - logging out (or a 401) removes every piece of guild data from the page.
"use strict";

const SESSION_KEY = "membersense.session";
const PAGE_SIZE = 100;
const MESSAGE_PAGE = 50;
const AVATAR_SIZE = "64"; // Discord's CDN takes ?size= (a power of two)

const $ = (id) => document.getElementById(id);

/** Everything known about the logged-in guild; reset() forgets it all. */
const state = {
  sessionId: sessionStorage.getItem(SESSION_KEY),
  server: null, // the login answer's serverName, memberCount, iconURL, guildId
  members: [],
  memberById: new Map(),
  channels: [],
  channelById: new Map(),
  filtered: [],
  page: 0,
  channelId: null,
  messages: [], // oldest first
  messageById: new Map(),
  loadingOlder: false,
  live: null, // the open EventSource, if any (issue 10's events)
  canSend: false,
};

// -- talking to the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.sessionId && path !== "/api/auth/login") headers.Authorization = state.sessionId;
  if (options.body) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "Cannot reach the MemberSense server. Check your connection; the page retries when you act again.");
  }
  const body = await response.json().catch(() => null);
  if (response.ok) return body;
  const retry = Number((body && body.retryAfter) || response.headers.get("Retry-After") || 0);
  const error = new ApiError(response.status, (body && body.error) || `HTTP ${response.status}`, retry);
  if (response.status === 401 && path !== "/api/auth/login") {
    signedOut("Your session has ended (logged out elsewhere, or idle too long). Log in again.");
  }
  throw error;
}

/** A sentence for an error, saying what to do next. */
function explain(error) {
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message}`;
  const wait = error.retryAfter ? ` Try again in ${Math.ceil(error.retryAfter)} s.` : " Try again in a moment.";
  switch (error.status) {
    case 0: return error.message;
    case 429: return `Too many requests.${wait}`;
    case 503: return `${error.message}.${wait}`.replace("..", ".");
    case 504: return `Discord did not answer in time.${wait}`;
    default: return error.message;
  }
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
  $("server").hidden = false;
  $("logout").hidden = false;
}

/** Forget the guild: data, DOM, view state. The page is as before a login. */
function reset() {
  if (state.live) state.live.close();
  Object.assign(state, {
    sessionId: null, server: null, members: [], memberById: new Map(), channels: [],
    channelById: new Map(), filtered: [], page: 0, channelId: null, messages: [],
    messageById: new Map(), loadingOlder: false, live: null, canSend: false,
  });
  sessionStorage.removeItem(SESSION_KEY);
  history.replaceState(null, "", location.pathname);
  for (const id of ["member-list", "channel-groups", "message-list"]) $(id).replaceChildren();
  for (const id of ["server-name", "member-count", "page-info", "channel-topic", "live"]) $(id).textContent = "";
  for (const id of ["members-status", "channels-status", "messages-status"]) setStatus(id, "");
  $("channel-title").textContent = "Pick a channel";
  $("role-filter").replaceChildren(el("option", { value: "", text: "All roles" }));
  $("member-search").value = "";
  $("send-text").value = "";
  $("server-icon").removeAttribute("src");
  for (const id of ["server", "server-icon", "logout", "app-view", "older", "send", "live"]) $(id).hidden = true;
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
    // Kept for a reload of this tab in the history entry (not in storage), dropped at logout.
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
window.addEventListener("online", () => showNotice(""));

async function start() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  showServer();
  setStatus("members-status", "Loading members…");
  setStatus("channels-status", "Loading channels…");
  const [members, channels] = await Promise.allSettled([loadMembers(), loadChannels()]);
  if (!state.sessionId) return; // a 401 signed us out meanwhile
  for (const result of [members, channels]) {
    if (result.status === "rejected") showNotice(explain(result.reason));
  }
  showServer();
  route();
  detectFeatures();
}

// -- members ------------------------------------------------------------------------

async function loadMembers() {
  let list;
  try {
    list = await api("/api/members");
  } catch (error) {
    setStatus("members-status", explain(error), true);
    throw error;
  }
  setMembers(list);
}

function setMembers(list) {
  state.members = list;
  state.memberById = new Map(list.map((m) => [m.id, m]));
  for (const m of list) m.search = `${m.displayName || ""}\n${m.username || ""}`.toLowerCase();
  const counts = new Map();
  for (const m of list) {
    for (const role of m.roles || []) if (role !== "@everyone") counts.set(role, (counts.get(role) || 0) + 1);
  }
  const chosen = $("role-filter").value;
  const roles = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  $("role-filter").replaceChildren(
    el("option", { value: "", text: "All roles" }),
    ...roles.map(([name, count]) => el("option", { value: name, text: `${name} (${numberFormat.format(count)})` })));
  if (counts.has(chosen)) $("role-filter").value = chosen;
  filterMembers(false);
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
  return el("li", { class: "member" },
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
$("role-filter").addEventListener("change", () => filterMembers());
$("prev-page").addEventListener("click", () => { state.page -= 1; renderMembers(); });
$("next-page").addEventListener("click", () => { state.page += 1; renderMembers(); });

// -- channels -----------------------------------------------------------------------

const KIND_LABEL = { text: "#", voice: "🔊", category: "" };

async function loadChannels() {
  let list;
  try {
    list = await api("/api/channels?type=all");
  } catch (error) {
    setStatus("channels-status", explain(error), true);
    throw error;
  }
  setChannels(list);
}

function setChannels(list) {
  state.channels = list;
  state.channelById = new Map(list.map((c) => [c.id, c]));
  const byPosition = (a, b) => (a.position - b.position) || a.id.localeCompare(b.id);
  const categories = list.filter((c) => c.type === "category").sort(byPosition);
  const inside = (parent) => list.filter((c) => c.type !== "category" && (c.parentId || null) === parent)
    .sort((a, b) => (a.type === "voice") - (b.type === "voice") || byPosition(a, b));
  const groups = [{ name: null, channels: inside(null) },
    ...categories.map((c) => ({ name: c.name, channels: inside(c.id) }))]
    .filter((g) => g.channels.length);
  $("channel-groups").replaceChildren(...groups.flatMap((group) => [
    group.name ? el("h3", { text: group.name }) : null,
    el("ul", {}, ...group.channels.map(channelItem)),
  ].filter(Boolean)));
  setStatus("channels-status", groups.length ? "" : "This server has no channels the bot can see.");
}

function channelItem(channel) {
  const readable = channel.type === "text";
  const button = el("button", {
    type: "button", class: `channel ${channel.type}`, disabled: !readable,
    title: readable ? (channel.topic || "") : `${channel.type} channel: no messages to read`,
    "aria-current": channel.id === state.channelId ? "true" : "false",
  }, el("span", { class: "kind", "aria-hidden": "true", text: KIND_LABEL[channel.type] ?? "•" }),
  el("span", { text: channel.name }),
  readable ? null : el("span", { class: "visually-hidden", text: ` (${channel.type})` }));
  button.dataset.channelId = channel.id;
  if (readable) {
    button.addEventListener("click", () => {
      history.pushState(history.state, "", `#channels/${channel.id}`);
      openChannel(channel.id);
    });
  }
  return el("li", {}, button);
}

// -- messages -----------------------------------------------------------------------

async function openChannel(channelId) {
  const channel = state.channelById.get(channelId);
  if (!channel) return;
  state.channelId = channelId;
  state.messages = [];
  state.messageById = new Map();
  for (const button of document.querySelectorAll(".channel")) {
    button.setAttribute("aria-current", String(button.dataset.channelId === channelId));
  }
  $("channel-title").textContent = `#${channel.name}`;
  $("channel-topic").textContent = channel.topic || "";
  $("message-list").replaceChildren();
  $("older").hidden = true;
  setStatus("messages-status", "Loading messages…");
  $("send").hidden = !state.canSend;
  await loadMessages(null);
}

async function loadMessages(before) {
  const channelId = state.channelId;
  const query = new URLSearchParams({ channelId, limit: String(MESSAGE_PAGE) });
  if (before) query.set("before", before);
  let page;
  try {
    page = await api(`/api/messages?${query}`);
  } catch (error) {
    if (channelId === state.channelId) setStatus("messages-status", explain(error), true);
    return;
  }
  if (channelId !== state.channelId) return; // another channel was opened meanwhile
  const older = page.slice().reverse(); // the API answers newest first
  const scroller = $("message-scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
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

// -- SEAM (issue 10): sending and live events ----------------------------------------
// The server does not have these endpoints yet; the dashboard is built against the API
// issue 10 plans (POST /api/messages; POST /api/events/ticket, then
// GET /api/events?ticket= as Server-Sent Events) and uses it only where it exists:
// OPTIONS /api/messages lists the methods the route takes (Allow), so the page learns
// whether POST exists without sending anything and without a 404 or 405 in the console.
// Sending and events land together (issue 10), so events are asked for only then; a
// ticket answered 404 or 405 still leaves the page as it is.

async function detectFeatures() {
  try {
    const response = await fetch("/api/messages", { method: "OPTIONS" });
    await response.text(); // read to its end (an unread body counts as a cancelled request)
    const allow = (response.headers.get("Allow") || "").toUpperCase().split(/\s*,\s*/);
    state.canSend = response.ok && allow.includes("POST");
  } catch (error) {
    state.canSend = false;
  }
  $("send").hidden = !(state.canSend && state.channelId);
  if (state.canSend) startLiveUpdates();
}

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const content = $("send-text").value.trim();
  if (!content || !state.channelId) return;
  try {
    const created = await api("/api/messages", { method: "POST", body: JSON.stringify({ channelId: state.channelId, content }) });
    $("send-text").value = "";
    addMessage(created);
  } catch (error) {
    setStatus("messages-status", explain(error), true);
  }
});

async function startLiveUpdates() {
  let ticket;
  try {
    const response = await fetch("/api/events/ticket", { method: "POST", headers: { Authorization: state.sessionId } });
    const body = await response.json().catch(() => null);
    if (!response.ok || !body) return; // 404 or 405: not there yet
    ticket = body.ticket;
  } catch (error) {
    return;
  }
  if (!ticket || !state.sessionId) return;
  const source = new EventSource(`/api/events?ticket=${encodeURIComponent(ticket)}`);
  state.live = source;
  $("live").textContent = "Live: new messages and members appear as they happen.";
  $("live").hidden = false;
  const on = (name, handler) => source.addEventListener(name, (event) => {
    try { handler(JSON.parse(event.data)); } catch (error) { /* a malformed event is skipped */ }
  });
  on("message.create", addMessage);
  on("message.update", (m) => { if (state.messageById.has(m.id)) replaceMessage(m); });
  on("message.delete", (m) => removeMessage(m.id));
  on("member.join", (m) => setMembers([...state.members.filter((x) => x.id !== m.id), m]));
  on("member.update", (m) => setMembers(state.members.map((x) => (x.id === m.id ? m : x))));
  on("member.leave", (m) => setMembers(state.members.filter((x) => x.id !== m.id)));
  for (const name of ["channel.create", "channel.update", "channel.delete"]) on(name, () => loadChannels().catch(() => {}));
  on("reset", () => { loadMembers().catch(() => {}); if (state.channelId) openChannel(state.channelId); });
  source.onerror = () => { if (!state.sessionId) source.close(); };
}

function addMessage(m) {
  if (!m || m.channelId && m.channelId !== state.channelId || state.messageById.has(m.id)) return;
  if (!m.channelId && !state.channelId) return;
  state.messages.push(m);
  state.messageById.set(m.id, m);
  $("message-list").append(messageItem(m));
  setStatus("messages-status", "");
  $("message-scroller").scrollTop = $("message-scroller").scrollHeight;
}

function replaceMessage(m) {
  state.messages = state.messages.map((x) => (x.id === m.id ? m : x));
  state.messageById.set(m.id, m);
  document.getElementById(`message-${m.id}`)?.replaceWith(messageItem(m));
}

function removeMessage(id) {
  state.messages = state.messages.filter((x) => x.id !== id);
  state.messageById.delete(id);
  document.getElementById(`message-${id}`)?.remove();
}

// -- start --------------------------------------------------------------------------

if (state.sessionId) {
  state.server = (history.state && history.state.server) || null;
  start().catch((error) => showNotice(explain(error)));
} else {
  reset();
}
