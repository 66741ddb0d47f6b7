// MemberSense dashboard: a thin client of the REST API it is served with.
// It sends the session id as the existing MemberSense web client does
// (Authorization: <sessionId>) and keeps it in sessionStorage only.
"use strict";

const $ = (id) => document.getElementById(id);
let sessionId = sessionStorage.getItem("membersense.session");
let members = [];
let channelId = null;

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (sessionId) headers.Authorization = sessionId;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && path !== "/api/auth/login") signedOut();
  if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
  return body;
}

function showError(error) {
  $("error").textContent = error ? error.message : "";
  $("error").hidden = !error;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function avatar(url) {
  return url ? el("img", { src: url, alt: "", loading: "lazy" }) : "";
}

function signedOut() {
  sessionId = null;
  sessionStorage.removeItem("membersense.session");
  $("views").hidden = true;
  $("server").hidden = true;
  $("login").hidden = false;
}

function renderMembers() {
  const needle = $("member-filter").value.trim().toLowerCase();
  const shown = members.filter((m) => !needle ||
    [m.username, m.displayName, ...(m.roles || [])].some((v) => (v || "").toLowerCase().includes(needle)));
  $("members-count").textContent = `(${shown.length} of ${members.length})`;
  $("members").replaceChildren(...shown.slice(0, 500).map((m) => el("tr", {},
    el("td", {}, avatar(m.avatar)),
    el("td", { textContent: m.displayName || m.username }),
    el("td", { textContent: m.username + (m.bot ? " (bot)" : "") }),
    el("td", { textContent: m.role || "" }),
    el("td", { textContent: m.joinedAt ? new Date(m.joinedAt).toLocaleDateString() : "" }))));
}

async function loadMessages(before) {
  const query = new URLSearchParams({ channelId, limit: "50" });
  if (before) query.set("before", before);
  const page = await api(`/api/messages?${query}`);
  const items = page.map((m) => el("li", {},
    avatar(m.author.avatar), " ",
    el("strong", { textContent: m.author.name }), " ",
    el("span", { className: "muted", textContent: new Date(m.timestamp).toLocaleString() }),
    el("div", { textContent: m.content })));
  if (before) $("messages").append(...items); else $("messages").replaceChildren(...items);
  $("older").hidden = page.length < 50;
  $("older").dataset.before = page.length ? page[page.length - 1].id : "";
}

async function selectChannel(channel, item) {
  channelId = channel.id;
  document.querySelectorAll("#channels li").forEach((li) => li.classList.remove("active"));
  item.classList.add("active");
  $("channel-name").textContent = `#${channel.name}`;
  await loadMessages();
}

async function loadAll() {
  $("login").hidden = true;
  $("views").hidden = false;
  $("server").hidden = false;
  const [memberList, channels] = await Promise.all([api("/api/members"), api("/api/channels")]);
  members = memberList;
  renderMembers();
  $("channels").replaceChildren(...channels.map((channel) => {
    const item = el("li", { textContent: `#${channel.name}` });
    item.addEventListener("click", () => selectChannel(channel, item).catch(showError));
    return item;
  }));
  if (channels.length) await selectChannel(channels[0], $("channels").firstElementChild);
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(null);
  try {
    const answer = await api("/api/auth/login", {
      method: "POST", body: JSON.stringify({ token: $("token").value.trim() }) });
    $("token").value = "";
    sessionId = answer.sessionId;
    sessionStorage.setItem("membersense.session", sessionId);
    sessionStorage.setItem("membersense.server", JSON.stringify(answer));
    showServer(answer);
    await loadAll();
  } catch (error) { showError(error); }
});

function showServer(answer) {
  $("server-name").textContent = answer.serverName;
  $("member-count").textContent = `${answer.memberCount} members`;
  $("server-icon").hidden = !answer.iconURL;
  if (answer.iconURL) $("server-icon").src = answer.iconURL;
}

$("logout").addEventListener("click", async () => {
  try { await api("/api/auth/logout", { method: "POST" }); } catch (error) { /* already gone */ }
  signedOut();
});
$("member-filter").addEventListener("input", renderMembers);
$("older").addEventListener("click", () => loadMessages($("older").dataset.before).catch(showError));

if (sessionId) {
  showServer(JSON.parse(sessionStorage.getItem("membersense.server") || "{}"));
  loadAll().catch(showError);
}
