// The browser client of the ecsdb game server: log in, open /ws, keep the
// rows of the world subscription (ecsdb's `initial` / `delta` messages),
// draw them interpolated between server ticks, send WASD input.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // Render this far behind the newest snapshot, so there are two to blend.
  const INTERP_MS = 110;
  const COLORS = { rock: "#7c7f86", food: "#3fae4a", water: "#3b82f6" };

  const state = {
    token: sessionStorage.getItem("token"),
    me: null,
    worldSize: 2000,
    viewRadius: 400,
    tick: 0,
    // id -> {kind, radius, name, level, health, snaps: [[t, x, y]...]}
    entities: new Map(),
    hud: null,
    status: "offline",
    input: { x: 0, y: 0 },
    ws: null,
    retry: 0,
  };
  // Exposed for tests and curious players.
  window.__game = state;

  async function api(path, body, token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = "Bearer " + token;
    const r = await fetch(path, { method: "POST", headers, body: body ? JSON.stringify(body) : undefined });
    let j = {};
    try { j = await r.json(); } catch (_) { /* empty body */ }
    if (!r.ok) throw new Error(j.message || ("HTTP " + r.status));
    return j;
  }

  function showError(msg) { $("auth-error").textContent = msg || ""; }

  async function login(ev) {
    if (ev) ev.preventDefault();
    showError("");
    try {
      const r = await api("/login", { username: $("username").value, password: $("password").value });
      state.token = r.token;
      sessionStorage.setItem("token", r.token);
      start();
    } catch (e) { showError(e.message); }
  }

  async function register() {
    showError("");
    const body = { username: $("username").value, password: $("password").value };
    if ($("email").value) body.email = $("email").value;
    try {
      await api("/register", body);
      await login();
    } catch (e) { showError(e.message); }
  }

  async function logout() {
    const t = state.token;
    state.token = null;
    sessionStorage.removeItem("token");
    if (state.ws) state.ws.close(1000);
    try { if (t) await api("/logout", null, t); } catch (_) { /* already gone */ }
    $("game").hidden = true;
    $("auth").hidden = false;
  }

  function start() {
    $("auth").hidden = true;
    $("game").hidden = false;
    connect();
  }

  function setStatus(s) { state.status = s; $("hud-status").textContent = s; }

  function connect() {
    if (!state.token) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws");
    state.ws = ws;
    setStatus("connecting");
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: state.token }));
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      onMessage(m);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      // Refusals that a retry cannot fix: back to the login form.
      if (ev.code === 4401 || ev.code === 4403 || ev.code === 4409) {
        setStatus("closed: " + (ev.reason || ev.code));
        if (ev.code !== 4409) {
          sessionStorage.removeItem("token");
          state.token = null;
          $("game").hidden = true;
          $("auth").hidden = false;
          showError(ev.reason || "session ended");
        }
        return;
      }
      if (!state.token) return;
      setStatus("reconnecting" + (ev.reason ? " (" + ev.reason + ")" : ""));
      state.retry = Math.min(state.retry + 1, 6);
      setTimeout(connect, 250 * 2 ** state.retry);
    };
  }

  function upsert(row, now) {
    const id = row.id;
    let e = state.entities.get(id);
    if (!e) {
      e = { kind: "player", radius: 12, name: "", level: 0, health: 100, snaps: [] };
      state.entities.set(id, e);
    }
    const b = row.body || {};
    if (b.kind !== undefined) e.kind = b.kind;
    if (b.radius !== undefined) e.radius = b.radius;
    const l = row.label || {};
    if (l.name !== undefined) e.name = l.name;
    if (l.level !== undefined) e.level = l.level;
    if (l.health !== undefined) e.health = l.health;
    if (b.position) {
      e.snaps.push([now, b.position[0], b.position[1]]);
      if (e.snaps.length > 8) e.snaps.shift();
    }
  }

  function onMessage(m) {
    const now = performance.now();
    switch (m.type) {
      case "welcome":
        state.me = m.player_id;
        state.worldSize = m.world_size;
        state.viewRadius = m.view_radius;
        state.tick = m.tick;
        state.retry = 0;
        $("hud-name").textContent = m.name;
        setStatus("connected");
        break;
      case "initial":
        state.entities.clear();
        for (const r of m.rows) upsert(r, now);
        break;
      case "delta":
        for (const r of m.entered) upsert(r, now);
        for (const r of m.changed) upsert(r, now);
        for (const id of m.left) state.entities.delete(id);
        break;
      case "you":
        state.hud = m;
        state.tick = m.tick;
        $("hud-level").textContent = m.level;
        $("hud-xp").textContent = m.experience;
        $("hud-next").textContent = m.next_level_at;
        for (const k of ["health", "hunger", "thirst"]) {
          $("hud-" + k).textContent = Math.round(m[k]);
          $("hud-" + k + "-bar").value = m[k];
        }
        $("hud-deaths").textContent = m.deaths;
        $("hud-online").textContent = m.players_online;
        $("hud-tick").textContent = m.tick;
        break;
      case "error":
        setStatus(m.message);
        break;
      default:
        break;
    }
  }

  // Where an entity is at time t: between the two snapshots around it,
  // or the newest (entities that stopped do not drift).
  function positionAt(e, t) {
    const s = e.snaps;
    if (s.length === 0) return null;
    if (t >= s[s.length - 1][0]) return [s[s.length - 1][1], s[s.length - 1][2]];
    for (let i = s.length - 1; i > 0; i--) {
      const a = s[i - 1], b = s[i];
      if (t >= a[0]) {
        const k = (t - a[0]) / Math.max(1, b[0] - a[0]);
        return [a[1] + (b[1] - a[1]) * k, a[2] + (b[2] - a[2]) * k];
      }
    }
    return [s[0][1], s[0][2]];
  }

  function hue(id) { return (Number(BigInt(id) % 360n) * 137) % 360; }

  function draw() {
    const c = $("world");
    const g = c.getContext("2d");
    const t = performance.now() - INTERP_MS;
    const me = state.me !== null ? state.entities.get(state.me) : null;
    const center = (me && positionAt(me, t)) || [state.worldSize / 2, state.worldSize / 2];
    const ox = c.width / 2 - center[0], oy = c.height / 2 - center[1];
    g.fillStyle = "#1b2a1b";
    g.fillRect(0, 0, c.width, c.height);
    // Grid and the world's edge.
    g.strokeStyle = "rgba(255,255,255,0.05)";
    g.beginPath();
    for (let x = Math.floor((center[0] - c.width) / 100) * 100; x < center[0] + c.width; x += 100) {
      g.moveTo(x + ox, 0); g.lineTo(x + ox, c.height);
    }
    for (let y = Math.floor((center[1] - c.height) / 100) * 100; y < center[1] + c.height; y += 100) {
      g.moveTo(0, y + oy); g.lineTo(c.width, y + oy);
    }
    g.stroke();
    g.strokeStyle = "#c0392b";
    g.lineWidth = 3;
    g.strokeRect(ox, oy, state.worldSize, state.worldSize);
    g.lineWidth = 1;
    // Scenery below players.
    const players = [];
    for (const [id, e] of state.entities) {
      const p = positionAt(e, t);
      if (!p) continue;
      if (e.kind === "player") { players.push([id, e, p]); continue; }
      g.fillStyle = COLORS[e.kind] || "#999";
      g.beginPath();
      g.arc(p[0] + ox, p[1] + oy, e.radius, 0, Math.PI * 2);
      g.fill();
    }
    g.textAlign = "center";
    g.font = "12px system-ui, sans-serif";
    for (const [id, e, p] of players) {
      const x = p[0] + ox, y = p[1] + oy;
      g.fillStyle = "hsl(" + hue(id) + ",70%,55%)";
      g.beginPath();
      g.arc(x, y, e.radius, 0, Math.PI * 2);
      g.fill();
      if (id === state.me) {
        g.strokeStyle = "#fff";
        g.lineWidth = 2;
        g.stroke();
        g.lineWidth = 1;
      }
      g.fillStyle = "#000a";
      g.fillRect(x - 16, y - e.radius - 8, 32, 4);
      g.fillStyle = e.health > 30 ? "#4ade80" : "#f87171";
      g.fillRect(x - 16, y - e.radius - 8, 32 * e.health / 100, 4);
      g.fillStyle = "#eee";
      g.fillText(e.name + " (" + e.level + ")", x, y - e.radius - 12);
    }
    // The edge of what the server shows us.
    g.strokeStyle = "rgba(255,255,255,0.08)";
    g.beginPath();
    g.arc(c.width / 2, c.height / 2, state.viewRadius, 0, Math.PI * 2);
    g.stroke();
    requestAnimationFrame(draw);
  }

  const keys = new Set();
  function readInput() {
    const x = (keys.has("d") || keys.has("arrowright") ? 1 : 0) - (keys.has("a") || keys.has("arrowleft") ? 1 : 0);
    const y = (keys.has("s") || keys.has("arrowdown") ? 1 : 0) - (keys.has("w") || keys.has("arrowup") ? 1 : 0);
    return { x, y };
  }
  function sendInput(force) {
    const i = readInput();
    if (!force && i.x === state.input.x && i.y === state.input.y) return;
    state.input = i;
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "input", x: i.x, y: i.y }));
    }
  }
  addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement) return;
    keys.add(ev.key.toLowerCase());
    sendInput(false);
  });
  addEventListener("keyup", (ev) => {
    keys.delete(ev.key.toLowerCase());
    sendInput(false);
  });
  addEventListener("blur", () => { keys.clear(); sendInput(false); });
  // Keep the input fresh (and the connection warm) while keys are held.
  setInterval(() => { if (keys.size) sendInput(true); }, 250);

  $("auth-form").addEventListener("submit", login);
  $("register").addEventListener("click", register);
  $("logout").addEventListener("click", logout);
  requestAnimationFrame(draw);
  if (state.token) start();
})();
