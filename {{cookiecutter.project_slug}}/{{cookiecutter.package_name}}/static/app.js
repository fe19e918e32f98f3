// The demo page: one chat room on top of client.js, the reusable part (see the README).
// Plain JavaScript with no build step and no framework: read it top to bottom.
import { RealtimeClient } from "./client.js";

// The server's rule for room names. It is checked here too so a bad ?room= link
// gets an explanation instead of a failed join.
const ROOM_RULE = /^[A-Za-z0-9_.:-]{1,64}$/;
const MAX_SHOWN = 500; // messages kept on screen, so a tab left open does not grow forever
// What this browser keeps: the display name, and the last guest token with its user.
const NAME_KEY = "realtime-demo.name";
const GUEST_KEY = "realtime-demo.guest";

const statusEl = document.getElementById("status");
const roomEl = document.getElementById("room");
const meEl = document.getElementById("me");
const meName = document.getElementById("me-name");
const renameButton = document.getElementById("rename");
const nameForm = document.getElementById("name");
const nameInput = document.getElementById("name-input");
const nameCancel = document.getElementById("name-cancel");
const list = document.getElementById("messages");
const noticeEl = document.getElementById("notice");
const form = document.getElementById("send");
const input = document.getElementById("message");

// The same host and port as the page, so no CORS or Origin settings are needed.
// An https page must use wss (browsers block ws from a secure page).
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";

let room = "lobby";
let roomNotice = ""; // shown again once connected, so the reason is not lost
const asked = new URLSearchParams(location.search).get("room");
if (asked !== null && ROOM_RULE.test(asked)) {
  room = asked;
} else if (asked !== null) {
  roomNotice = `"${asked}" is not a room name (1 to 64 of A-Z a-z 0-9 _ . : -), so this is the lobby.`;
  notify(roomNotice, "error");
}
roomEl.textContent = room;

let me = null; // { id, name }: this page's user, as the server knows it
let started = false;
let wasConnected = false;

// localStorage can be off (privacy settings): the page then asks on every visit.
function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {}
}

function keptGuest() {
  try {
    return JSON.parse(load(GUEST_KEY)) || {};
  } catch {
    return {};
  }
}

// A guest token for the kept name from this app's POST /token. The last guest token
// goes along as Bearer, even expired, so this browser stays the same user.
async function guestToken() {
  const headers = { "Content-Type": "application/json" };
  const previous = keptGuest().token;
  if (previous) headers.Authorization = `Bearer ${previous}`;
  const answer = await fetch("/token", {
    method: "POST",
    headers,
    body: JSON.stringify({ name: load(NAME_KEY) }),
  });
  if (answer.status === 400) {
    // The server refused the name: trying again with it would not help.
    const refused = await answer.json().catch(() => ({}));
    client.stop();
    started = false;
    askName(false);
    notify(`That name was refused: ${refused.message}.`, "error");
    throw new Error(refused.message);
  }
  if (answer.status === 429) throw new Error("too many sign-ins from this address: wait a minute");
  if (!answer.ok) throw new Error(`POST /token answered ${answer.status}`);
  const guest = await answer.json(); // { token, user, expires_in }
  save(GUEST_KEY, JSON.stringify({ token: guest.token, user: guest.user }));
  return guest;
}

// The page opens with the room's last 50 messages, and every reconnect (a deploy,
// a restart, a network change) catches up on what it missed (client.js).
const HISTORY = 50;
const client = new RealtimeClient({ url, getToken: guestToken, rooms: [room], history: HISTORY });

// Stopped only while it waits for a name; #status has three words (the contract's).
client.addEventListener("state", (event) => {
  const { state } = event.detail;
  setStatus(state === "stopped" ? "connecting" : state);
});

client.addEventListener("user", (event) => showMe(event.detail.user));

// A refresh may carry a new name (see rename below): the kept guest is its user.
client.addEventListener("refreshed", () => {
  const { user } = keptGuest();
  if (user) showMe(user);
});

client.addEventListener("joined", (event) => {
  if (event.detail.room !== room) return;
  if (event.detail.frame.recovered === false) {
    // Too far behind, or the server's history was lost: what is shown is stale.
    notify("Reconnected, but some messages sent while this page was offline could not be recovered: reload to see the latest.", "warn");
  } else if (wasConnected && event.detail.frame.epoch === undefined) {
    // History is off on the server (HISTORY_SIZE=0): nothing is replayed.
    notify("Reconnected. Messages sent while this page was offline are not shown.", "");
  } else {
    notify(roomNotice, "error"); // what an earlier attempt said is over now
  }
  wasConnected = true;
});

client.addEventListener("message", (event) => {
  if (event.detail.room === room) addMessage(event.detail);
});

client.addEventListener("gap", (event) => {
  notify(
    `The server briefly lost its message broker: messages sent to ${event.detail.rooms.join(", ")} in that time were lost.`,
    "warn",
  );
});

client.addEventListener("error", (event) => {
  const { code, message } = event.detail;
  notify(code === "token_failed" ? `Could not sign in: ${message}.` : `${message} (${code})`, "error");
});

client.addEventListener("retry", (event) => {
  const detail = event.detail;
  notify(`${retryReason(detail)}. Reconnecting in ${(detail.delay / 1000).toFixed(1)} s.`, "warn");
});

// The close codes of the protocol, in words.
const CLOSE_REASONS = {
  1001: "The server is restarting",
  1003: "The server does not accept binary frames",
  1007: "The server received text that is not UTF-8",
  1009: "That message was too large for the server",
  1011: "The server hit an unexpected error",
  1012: "The server is restarting",
  1013: "This page fell too far behind the messages",
  4401: "The sign-in expired",
};

function retryReason({ why, code, error }) {
  if (why === "token") return `Could not get a sign-in token (${error?.message ?? error})`;
  if (why === "refused") return "The server did not accept the sign-in token";
  if (why === "silent") return "The server stopped answering";
  // 1006 is the browser's code for "closed without a close frame", including a
  // refused handshake (403 wrong origin, 429 or 503 too many connections).
  return CLOSE_REASONS[code] || (code === 1006 ? "Could not connect" : "The connection was lost");
}

function setStatus(state) {
  statusEl.textContent = state; // exactly connecting, connected or reconnecting
  statusEl.dataset.state = state; // for the stylesheet
}

function notify(text, kind) {
  noticeEl.textContent = text;
  noticeEl.className = kind || "";
}

function showMe(user) {
  me = user;
  meName.textContent = user.name; // a name is text from a person: never innerHTML
  meEl.hidden = false;
}

function addMessage({ data, from }) {
  // Anyone can publish any JSON value; show data.text when there is one.
  const hasText = data !== null && typeof data === "object" && "text" in data;
  const body = document.createElement("span");
  body.textContent = hasText ? String(data.text) : JSON.stringify(data); // never innerHTML: the text comes from strangers

  const now = new Date();
  const time = document.createElement("time");
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

  const item = document.createElement("li");
  item.append(time, " ");
  // from is set by the server from the sender's token; a backend's message has none.
  if (from) {
    const who = document.createElement("strong");
    who.className = "from";
    who.textContent = from.name;
    item.append(who, " ");
    item.dataset.userId = from.id;
    if (me && from.id === me.id) item.classList.add("mine");
  }
  item.append(body);

  // Follow new messages only if the reader has not scrolled up to read older ones.
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// The name form: shown once when no name is kept, and again to change it.
function askName(changing) {
  nameInput.value = load(NAME_KEY) || "";
  nameCancel.hidden = !changing;
  nameForm.hidden = false;
  nameInput.focus();
}

nameForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = nameInput.value.trim(); // the server trims too
  if (!name) return;
  if (/\p{Cc}/u.test(name)) {
    notify("A name cannot hold control characters (tabs, line breaks).", "error");
    return; // the server's rule: asking it would only get a 400
  }
  save(NAME_KEY, name);
  nameForm.hidden = true;
  form.hidden = false;
  if (started) {
    client.refresh(); // a new token for the new name, on the same connection
  } else {
    started = true;
    client.start();
  }
});

nameCancel.addEventListener("click", () => {
  nameForm.hidden = true;
});

renameButton.addEventListener("click", () => askName(true));

form.addEventListener("submit", (event) => {
  event.preventDefault(); // stay on the page: the socket does the sending
  if (!input.value.trim()) return;
  if (!client.publish(room, { text: input.value })) {
    notify("Not connected: the message was kept. Send it again once connected.", "warn");
    return;
  }
  input.value = "";
  input.focus();
});

// A kept name: connect at once. Else ask for one first.
if (load(NAME_KEY)) {
  started = true;
  client.start();
} else {
  form.hidden = true;
  askName(false);
}
