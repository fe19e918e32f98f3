// Demo client for this app's WebSocket protocol (see the README).
// Plain JavaScript with no build step and no framework: read it top to bottom.
"use strict";

(function () {
  // The server's rule for room names. It is checked here too so a bad ?room= link
  // gets an explanation instead of a failed join.
  const ROOM_RULE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const FIRST_DELAY = 500; // ms before the first reconnect attempt
  const MAX_DELAY = 30000; // ms; during a long outage each tab tries at most twice a minute
  const HEARTBEAT = 20000; // ms between app-level pings (see the watchdog below)
  const MAX_SHOWN = 500; // messages kept on screen, so a tab left open does not grow forever

  const statusEl = document.getElementById("status");
  const roomEl = document.getElementById("room");
  const list = document.getElementById("messages");
  const noticeEl = document.getElementById("notice");
  const form = document.getElementById("send");
  const input = document.getElementById("message");

  // The same host and port as the page, so no CORS or Origin settings are needed.
  // An https page must use wss (browsers block ws from a secure page).
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";

  let room = "lobby";
  const asked = new URLSearchParams(location.search).get("room");
  if (asked !== null && ROOM_RULE.test(asked)) {
    room = asked;
  } else if (asked !== null) {
    notify(`"${asked}" is not a room name (1 to 64 of A-Z a-z 0-9 _ . : -), so this is the lobby.`, "error");
  }
  roomEl.textContent = room;
  const rooms = new Set([room]); // every room to join again after a reconnect

  let socket = null; // the current WebSocket, or null between attempts
  let attempt = 0; // reconnect attempts since the last successful open
  let joined = false; // has the server confirmed our room on this socket?
  let wasConnected = false;
  let awaiting = false; // has a heartbeat ping gone unanswered?

  function setStatus(state) {
    statusEl.textContent = state; // exactly connecting, connected or reconnecting
    statusEl.dataset.state = state; // for the stylesheet
  }

  function notify(text, kind) {
    noticeEl.textContent = text;
    noticeEl.className = kind || "";
  }

  // Exponential backoff with jitter: the next delay doubles up to MAX_DELAY, and a
  // random part spreads out the many tabs that a dyno restart drops at once.
  function backoff() {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** attempt);
    attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function joinAll() {
    for (const name of rooms) send({ type: "join", room: name });
  }

  function connect() {
    const ws = new WebSocket(url);
    let opened = false;
    socket = ws;
    joined = false;
    awaiting = false;

    ws.onopen = () => {
      opened = true;
      attempt = 0; // the server is reachable again: start the backoff from scratch
      joinAll();
    };
    ws.onmessage = (event) => {
      if (ws !== socket) return; // a socket we already gave up on
      awaiting = false; // any frame proves the connection is alive
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      handle(frame);
    };
    ws.onclose = (event) => {
      if (ws === socket) retry(closeReason(event.code, opened));
    };
  }

  function retry(reason) {
    socket = null;
    setStatus("reconnecting");
    const delay = backoff();
    notify(`${reason}. Reconnecting in ${(delay / 1000).toFixed(1)} s.`, "warn");
    setTimeout(connect, delay);
  }

  // The close codes of the protocol, in words.
  const CLOSE_REASONS = {
    1001: "The server is restarting",
    1003: "The server does not accept binary frames",
    1007: "The server received text that is not UTF-8",
    1009: "That message was too large for the server",
    1011: "The server hit an unexpected error",
    1012: "The server is restarting",
    1013: "This page fell too far behind the messages",
  };

  function closeReason(code, opened) {
    // 1006 is the browser's code for "closed without a close frame", including a
    // refused handshake (403 wrong origin, 503 server full or shutting down).
    return CLOSE_REASONS[code] || (opened ? "The connection was lost" : "Could not connect");
  }

  function handle(frame) {
    switch (frame.type) {
      case "joined":
        if (frame.room !== room) break;
        joined = true;
        setStatus("connected");
        // The server does not replay what was published while we were away.
        if (wasConnected) notify("Reconnected. Messages sent while this page was offline are not shown.", "");
        wasConnected = true;
        break;
      case "message":
        addMessage(frame.data);
        break;
      case "gap":
        notify(
          `The server briefly lost its message broker: messages sent to ${frame.rooms.join(", ")} in that time were lost.`,
          "warn",
        );
        break;
      case "error":
        notify(`${frame.message} (${frame.code})`, "error");
        // The server could not reach its broker, so the join did not happen: try again.
        if (frame.code === "broker_unavailable" && !joined) setTimeout(joinAll, backoff());
        break;
      // "published", "left" and "pong" need nothing on screen.
    }
  }

  function addMessage(data) {
    // Anyone can publish any JSON value; show data.text when there is one.
    const hasText = data !== null && typeof data === "object" && "text" in data;
    const body = document.createElement("span");
    body.textContent = hasText ? String(data.text) : JSON.stringify(data); // never innerHTML: the text comes from strangers

    const now = new Date();
    const time = document.createElement("time");
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

    const item = document.createElement("li");
    item.append(time, " ", body);

    // Follow new messages only if the reader has not scrolled up to read older ones.
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    if (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault(); // stay on the page: the socket does the sending
    if (!input.value.trim()) return;
    if (!send({ type: "publish", room: room, data: { text: input.value } })) {
      notify("Not connected: the message was kept. Send it again once connected.", "warn");
      return;
    }
    input.value = "";
    input.focus();
  });

  // Watchdog. The server's protocol Pings keep the connection alive, but a page cannot
  // see them, so it cannot tell a quiet room from a dead network (a laptop waking from
  // sleep, a changed Wi-Fi). Every HEARTBEAT it sends an app-level ping; if not a single
  // frame has arrived since the previous one, the socket is dead: drop it and reconnect.
  setInterval(() => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (awaiting) {
      const dead = socket;
      socket = null; // so its late close event is ignored
      dead.close();
      retry("The server stopped answering");
      return;
    }
    awaiting = send({ type: "ping" });
  }, HEARTBEAT);

  connect();
})();
