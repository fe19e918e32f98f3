// A reusable client for this app's WebSocket protocol (see the README).
// An ES module with no dependencies and no build step: copy it into any front end.
//
//   import { RealtimeClient } from "./client.js";
//   const client = new RealtimeClient({ url, getToken, rooms: ["lobby"], history: 50 });
//   client.addEventListener("message", (event) => show(event.detail));
//   client.start();
//
// getToken({ reason }) returns a token, or a Promise of one: a string, or an object
// { token, expires_in } (other fields are ignored). reason says why it is asked:
// "connect" (no token yet), "refresh" (the current one expires soon), "expired"
// (the server refused it or closed with 4401) or "renew" (refresh() was called).
// If it throws or rejects, the client reports an error and tries again later.
//
// history (0 unless given): how many past messages to ask for when it first joins
// a room. After that it keeps each room's offset and epoch (README, History) and
// rejoins with since after every reconnect, so that nothing is lost or repeated;
// the server's recovered false (too far behind, or the history was lost) is in
// the joined event's frame.
//
// Methods: start(), stop(), join(room), leave(room), refresh() (get a new token
// now, e.g. after the user's name changed), and publish(room, data), which returns
// false when not connected. Properties: state, user ({ id, name } or null).
//
// Events, each a CustomEvent with its payload in event.detail:
//   state      { state }                connecting, connected, reconnecting or stopped
//   user       { user, expires_in }     after each authentication; user is { id, name }
//   refreshed  { expires_in }           a new token is in use on the open socket
//   joined     { room, frame }          in the room again (after every reconnect too);
//                                       frame.recovered false: messages were missed
//   message    { room, data, from }     from is { id, name }, absent for backends
//   gap        { rooms }                messages to these rooms may have been lost
//   error      { code, message, request }  an error reply (request: what it answers),
//                                       or code "token_failed" when getToken failed
//   retry      { delay, why, code, reason, error }  the next attempt is in delay ms;
//              why: "closed" (code, reason), "silent", "refused" or "token" (error)

const FIRST_DELAY = 500; // ms before the first reconnect attempt
const MAX_DELAY = 30000; // ms; during a long outage each tab tries at most twice a minute
const HEARTBEAT = 20000; // ms between app-level pings (see the watchdog below)
const REFRESH_AT = 0.8; // refresh once this share of a token's life has passed
const MIN_REFRESH = 1000; // ms; a nearly spent token is not refreshed in a tight loop
// Browsers run a setTimeout longer than 2^31 - 1 ms (24.8 days) at once: a token
// that lasts longer is refreshed after that long instead, not in a tight loop.
const MAX_TIMER = 2 ** 31 - 1;

// A timer's delay in ms, within what browsers honour.
function later(ms) {
  return Math.min(MAX_TIMER, Math.max(MIN_REFRESH, ms));
}

export class RealtimeClient extends EventTarget {
  #url;
  #getToken;
  #rooms; // every room to join again after a reconnect
  #history; // past messages to ask for on a first join
  #positions = new Map(); // room -> { offset, epoch } of the last message shown
  #heartbeat;
  #state = "stopped"; // until start()
  #user = null;
  #running = false;
  #generation = 0; // bumped by stop(), so an attempt under way gives up
  #socket = null; // the current WebSocket, or null between attempts
  #authed = false; // has the server accepted our token on this socket?
  #joining = new Set(); // rooms asked for on this socket and not yet joined
  #pending = new Map(); // ref -> request, to know what an error reply answers
  #refs = 0;
  #attempt = 0; // reconnect attempts since the last successful authentication
  #awaiting = false; // has a heartbeat ping gone unanswered?
  #token = null; // the token to present, kept across reconnects
  #why = "connect"; // the reason to give getToken when #token is null
  #renewAt = 0; // ms since the epoch after which #token is replaced before use
  #expiresAt = 0; // ms since the epoch when the server stops accepting #token
  #refreshing = false;
  #retryTimer;
  #refreshTimer;
  #watchdog;

  constructor({ url, getToken, rooms = [], heartbeat = HEARTBEAT, history = 0 }) {
    super();
    this.#url = url;
    this.#getToken = getToken;
    this.#rooms = new Set(rooms);
    this.#history = history;
    this.#heartbeat = heartbeat;
  }

  get state() {
    return this.#state;
  }

  get user() {
    return this.#user; // { id, name } once authenticated, else null
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#setState("connecting");
    this.#watchdog = setInterval(() => this.#checkAlive(), this.#heartbeat);
    this.#connect();
  }

  stop() {
    this.#running = false;
    this.#generation += 1;
    clearInterval(this.#watchdog);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    const socket = this.#socket;
    this.#socket = null; // so its close event is ignored
    this.#authed = false;
    if (socket) socket.close(1000);
    this.#setState("stopped");
  }

  join(room) {
    this.#rooms.add(room);
    if (this.#authed) {
      this.#joining.add(room);
      this.#join(room);
    }
  }

  leave(room) {
    this.#rooms.delete(room);
    this.#joining.delete(room);
    this.#positions.delete(room);
    if (this.#authed) this.#request({ type: "leave", room });
  }

  // False when not connected: the caller keeps the message (nothing is queued, so
  // nothing is sent long after the user thought it lost).
  publish(room, data) {
    return this.#authed && this.#request({ type: "publish", room, data });
  }

  // Get a new token now (the user's name or rights changed): on the open socket by
  // a refresh, which keeps the connection; else at the next connect.
  refresh() {
    if (this.#authed) this.#renew("renew");
    else this.#dropToken("renew");
  }

  async #connect() {
    const generation = this.#generation;
    let token;
    try {
      token = await this.#currentToken();
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#tokenFailed(error);
      this.#retry({ why: "token", error });
      return;
    }
    if (generation !== this.#generation) return; // stopped meanwhile

    const ws = new WebSocket(this.#url);
    this.#socket = ws;
    this.#authed = false;
    this.#pending = new Map();
    this.#awaiting = false;
    // The token rides in the first frame, never in the URL: Heroku's router logs URLs.
    ws.onopen = () => this.#request({ type: "auth", token });
    ws.onmessage = (event) => {
      if (ws !== this.#socket) return; // a socket we already gave up on
      this.#awaiting = false; // any frame proves the connection is alive
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#handle(frame);
    };
    ws.onclose = (event) => {
      if (ws === this.#socket) this.#lost({ why: "closed", code: event.code, reason: event.reason });
    };
  }

  // The kept token while it is fresh, so a reconnect (a deploy drops every tab at
  // once) does not ask the token endpoint again; else a new one.
  async #currentToken() {
    if (this.#token !== null && Date.now() < this.#renewAt) return this.#token;
    return this.#fetchToken(this.#token === null ? this.#why : "refresh");
  }

  async #fetchToken(reason) {
    const answer = await this.#getToken({ reason });
    const token = typeof answer === "string" ? answer : answer?.token;
    if (typeof token !== "string" || token === "") throw new Error("getToken gave no token");
    this.#token = token;
    // Until the server says when it expires, trust the issuer's expires_in, if any.
    const life = answer?.expires_in;
    this.#renewAt = typeof life === "number" ? this.#renewTime(life) : Infinity;
    return token;
  }

  #renewTime(seconds) {
    return Date.now() + Math.max(MIN_REFRESH, seconds * 1000 * REFRESH_AT);
  }

  #dropToken(why) {
    this.#token = null;
    this.#why = why;
  }

  #handle(frame) {
    const request = this.#pending.get(frame.ref);
    this.#pending.delete(frame.ref);
    switch (frame.type) {
      case "authed":
        this.#authed = true;
        this.#attempt = 0; // in again: the next outage starts the backoff from scratch
        this.#user = frame.user;
        this.#emit("user", { user: frame.user, expires_in: frame.expires_in });
        this.#expiring(frame.expires_in);
        this.#joining = new Set(this.#rooms);
        for (const room of this.#rooms) this.#join(room);
        this.#settle(); // connected already if there is no room to join
        break;
      case "refreshed":
        this.#expiring(frame.expires_in);
        this.#emit("refreshed", { expires_in: frame.expires_in });
        break;
      case "joined":
        if (!this.#joining.delete(frame.room)) break; // left meanwhile
        this.#joinedAt(frame);
        this.#emit("joined", { room: frame.room, frame });
        this.#settle();
        break;
      case "message":
        if (!this.#advance(frame)) break; // shown already
        this.#emit("message", { room: frame.room, data: frame.data, from: frame.from });
        break;
      case "gap":
        this.#emit("gap", { rooms: frame.rooms });
        break;
      case "error":
        this.#refused(frame, request);
        break;
      // "published", "left" and "pong" need nothing: any frame fed the watchdog.
    }
  }

  #join(room) {
    const since = this.#positions.get(room);
    if (since) this.#request({ type: "join", room, since });
    else if (this.#history > 0) this.#request({ type: "join", room, history: this.#history });
    else this.#request({ type: "join", room });
  }

  // Where this room's messages go on from. A first join counts from the start of
  // the epoch, so the history it asked for is shown; recovered false skips to now.
  #joinedAt(frame) {
    if (frame.epoch === undefined) return; // history is off on the server
    const { room, offset, epoch } = frame;
    if (!this.#positions.has(room)) {
      this.#positions.set(room, { offset: this.#history > 0 ? 0 : offset, epoch });
    } else if (frame.recovered === false) {
      this.#positions.set(room, { offset, epoch });
    }
  }

  // False for a message this page has shown already (its offset is not past the
  // room's); the server sends each once, this keeps it so across any reconnect.
  #advance(frame) {
    if (frame.epoch === undefined) return true; // no history: nothing to compare
    const known = this.#positions.get(frame.room);
    if (known && known.epoch === frame.epoch && frame.offset <= known.offset) return false;
    this.#positions.set(frame.room, { offset: frame.offset, epoch: frame.epoch });
    return true;
  }

  // Connected once authenticated and back in every room: a message published after
  // that reaches this page.
  #settle() {
    if (this.#authed && this.#joining.size === 0) this.#setState("connected");
  }

  // The server's expiry for the token in use; its refresh is due at REFRESH_AT of it.
  #expiring(seconds) {
    this.#expiresAt = Date.now() + seconds * 1000;
    clearTimeout(this.#refreshTimer);
    if (this.#token === null) {
      this.#renew(this.#why); // refresh() was called while this token was on its way
      return;
    }
    this.#renewAt = this.#renewTime(seconds);
    this.#refreshTimer = setTimeout(() => this.#renew("refresh"), later(this.#renewAt - Date.now()));
  }

  async #renew(reason) {
    clearTimeout(this.#refreshTimer);
    if (this.#refreshing) return; // one on its way already
    this.#refreshing = true;
    const socket = this.#socket;
    try {
      const token = await this.#fetchToken(reason);
      // A new socket authenticates with this token anyway.
      if (socket === this.#socket && this.#authed) this.#request({ type: "refresh", token });
    } catch (error) {
      this.#tokenFailed(error);
      if (socket === this.#socket && this.#authed) this.#retryRefresh();
    } finally {
      this.#refreshing = false;
    }
  }

  // Try again at half the time left, then half of that: the socket stays good until
  // the expiry (plus the server's leeway), when the server closes it with 4401.
  #retryRefresh() {
    const left = this.#expiresAt - Date.now();
    this.#refreshTimer = setTimeout(() => this.#renew("refresh"), later(left / 2));
  }

  #tokenFailed(error) {
    this.#emit("error", { code: "token_failed", message: String(error?.message ?? error) });
  }

  #refused(frame, request) {
    this.#emit("error", { code: frame.code, message: frame.message, request });
    const room = request?.room;
    switch (request?.type) {
      case "auth":
        // An old token (expired during an outage, or the server's key changed):
        // reconnect with a new one. The backoff keeps a bad token source slow.
        this.#dropToken("expired");
        this.#abandon({ why: "refused" });
        break;
      case "refresh":
        this.#dropToken("expired"); // the old expiry stands
        this.#retryRefresh();
        break;
      case "join":
        if (!this.#joining.has(room)) break;
        if (frame.code === "broker_unavailable" || frame.code === "rate_limited") {
          // Not done, but it may work in a moment (the server reconnects to Redis).
          const socket = this.#socket;
          setTimeout(() => {
            if (socket === this.#socket && this.#joining.has(room)) this.#join(room);
          }, FIRST_DELAY + Math.random() * FIRST_DELAY);
        } else {
          // forbidden, invalid_room, too_many_rooms: asking again would not help.
          this.#rooms.delete(room);
          this.#joining.delete(room);
          this.#settle();
        }
        break;
    }
  }

  #request(frame) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    const ref = String(++this.#refs);
    this.#pending.set(ref, frame);
    socket.send(JSON.stringify({ ...frame, ref }));
    return true;
  }

  // Give up on the current socket ourselves; its late close event is then ignored.
  #abandon(detail) {
    const dead = this.#socket;
    this.#socket = null;
    dead.close();
    this.#lost(detail);
  }

  #lost(detail) {
    this.#socket = null;
    this.#authed = false;
    clearTimeout(this.#refreshTimer);
    // 4401: the server no longer takes this token (it expired, or signing in took
    // too long): ask for a new one before reconnecting.
    if (detail.code === 4401) this.#dropToken("expired");
    this.#retry(detail);
  }

  #retry(detail) {
    this.#setState("reconnecting");
    const delay = this.#backoff();
    this.#emit("retry", { ...detail, delay });
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  // Exponential backoff with jitter: the next delay doubles up to MAX_DELAY, and a
  // random part spreads out the many tabs that a dyno restart drops at once.
  #backoff() {
    const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** this.#attempt);
    this.#attempt += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  // Watchdog. The server's protocol Pings keep the connection alive, but a page cannot
  // see them, so it cannot tell a quiet room from a dead network (a laptop waking from
  // sleep, a changed Wi-Fi). Every heartbeat it sends an app-level ping; if not a single
  // frame has arrived since the previous one, the socket is dead: drop it and reconnect.
  #checkAlive() {
    const socket = this.#socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (this.#awaiting) this.#abandon({ why: "silent" });
    else this.#awaiting = this.#request({ type: "ping" });
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", { state });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
