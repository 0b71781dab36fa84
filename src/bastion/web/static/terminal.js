// The web SSH terminal (docs/web.md): xterm.js in the page, one WebSocket per terminal tab.
// Binary frames carry the terminal's bytes both ways; text frames are JSON control messages.
// Per-session MFA: the server sends {type: "mfa", options}; the security key signs it here and
// the assertion goes back on the same WebSocket. Reconnect: a WebSocket that drops without the
// session ending reconnects with resume=<terminal id> (the proxy holds the session for 30 s).
// No inline code anywhere: the CSP allows scripts from this origin only, and <style> elements
// only with the page's nonce (xterm.js writes its measured cell sizes into one).
"use strict";

(() => {
  const holder = document.getElementById("terminals");
  const status = document.getElementById("term-status");
  if (!holder || typeof Terminal === "undefined") {
    if (status) status.textContent = "The terminal library did not load (see the server log).";
    return;
  }
  const tabs = document.getElementById("term-tabs");
  window.bastionStyleNonce(holder.dataset.styleNonce || "");

  const { b64uToBuf, assertionJSON } = window.bastionWebAuthn;

  const all = [];
  let active = null;
  const RETRIES = 10;
  // Output batching. xterm.js renders after each write it parses, up to 60 times a second; in
  // bulk output (a build log, cat of a big file) those renders cost the browser more than
  // parsing the bytes. So a bulk chunk (SMALL bytes or more) arriving within BATCH_MS of the
  // last bulk write waits and is written with the others BATCH_MS after it (renders capped near
  // 1000 / BATCH_MS a second). A small chunk (an echo, a prompt) and the first bulk chunk after
  // a quiet moment (a command's output) are written at once.
  const BATCH_MS = 50;
  const SMALL = 1024;

  const show = (t) => {
    if (t !== active) return;
    status.textContent = t.text;
    status.className = t.kind;
  };
  const select = (t) => {
    active = t;
    all.forEach((o) => {
      const on = o === t;
      o.pane.hidden = !on;
      o.tab.setAttribute("aria-selected", on ? "true" : "false");
      o.tab.tabIndex = on ? 0 : -1;
    });
    document.querySelectorAll("input[name=term]").forEach((i) => { i.value = t.id || ""; });
    show(t);
    t.fit.fit();
    t.term.focus();
  };

  function open(node, login) {
    const n = all.length + 1;
    const t = { n, id: "", text: "Connecting…", kind: "muted", ended: false, retries: 0 };
    t.tab = document.createElement("button");
    t.tab.type = "button";
    t.tab.setAttribute("role", "tab");
    t.tab.id = `tab-${n}`;
    t.tab.textContent = `${n}: ${login}@${node}`;
    t.pane = document.createElement("div");
    t.pane.id = n === 1 ? "terminal" : `terminal-${n}`;
    t.pane.className = "term-pane";
    t.pane.setAttribute("role", "tabpanel");
    t.pane.setAttribute("aria-labelledby", t.tab.id);
    t.tab.setAttribute("aria-controls", t.pane.id);
    tabs.appendChild(t.tab);
    holder.appendChild(t.pane);
    t.tab.addEventListener("click", () => select(t));
    t.term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
    t.fit = new FitAddon.FitAddon();
    t.term.loadAddon(t.fit);
    t.term.open(t.pane);
    all.push(t);
    select(t);
    const encoder = new TextEncoder();
    const send = (data) => { if (t.ws && t.ws.readyState === WebSocket.OPEN) t.ws.send(data); };
    t.term.onData((data) => send(encoder.encode(data)));
    t.term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    t.term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
    const say = (text, kind) => { t.text = text; t.kind = kind; show(t); };
    let pending = [];
    let pendingBytes = 0;
    let lastBulk = 0;
    let timer = 0;
    const flush = () => {
      timer = 0;
      if (!pendingBytes) return;
      let data = pending[0];
      if (pending.length > 1) {
        data = new Uint8Array(pendingBytes);
        let at = 0;
        pending.forEach((chunk) => { data.set(chunk, at); at += chunk.length; });
      }
      if (pendingBytes >= SMALL) lastBulk = performance.now();
      pending = [];
      pendingBytes = 0;
      t.term.write(data);
    };
    const output = (chunk) => {
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (timer) return;
      const wait = lastBulk + BATCH_MS - performance.now();
      if (wait <= 0 || chunk.length < SMALL) flush();
      else timer = setTimeout(flush, wait);
    };

    async function mfa(ws, msg) {
      say(`Touch your security key to open ${msg.login}@${msg.node} (per-session MFA).`, "muted");
      t.pane.dataset.state = "mfa";
      const o = msg.options;
      o.challenge = b64uToBuf(o.challenge);
      (o.allowCredentials || []).forEach((c) => { c.id = b64uToBuf(c.id); });
      let credential = null;
      try {
        credential = assertionJSON(await navigator.credentials.get({ publicKey: o }));
      } catch (err) {
        credential = null;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "mfa", credential }));
    }

    function connect() {
      const query = new URLSearchParams({ node, login, cols: t.term.cols, rows: t.term.rows });
      if (t.id) query.set("resume", t.id);
      const ws = new WebSocket(`wss://${location.host}/web/ssh/ws?${query}`);
      ws.binaryType = "arraybuffer";
      t.ws = ws;
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") {
          output(new Uint8Array(event.data));
          return;
        }
        let msg;
        try { msg = JSON.parse(event.data); } catch { return; }
        if (msg.type === "mfa") {
          mfa(ws, msg);
        } else if (msg.type === "ready") {
          t.id = msg.id;
          t.retries = 0;
          if (t === active) document.querySelectorAll("input[name=term]").forEach((i) => { i.value = t.id; });
          say(`${msg.resumed ? "Reconnected" : "Connected"} as ${msg.login} to ${msg.node}.`, "ok");
          t.pane.dataset.state = "open";
          t.term.options.disableStdin = false;
          send(JSON.stringify({ type: "resize", cols: t.term.cols, rows: t.term.rows }));
          if (t === active) t.term.focus();
        } else if (msg.type === "error") {
          t.ended = true;
          say(msg.message, "error");
          t.pane.dataset.state = "error";
        } else if (msg.type === "closed") {
          t.ended = true;
          say(`Session closed: ${msg.message}`, "error");
          t.pane.dataset.state = "closed";
        }
      };
      ws.onclose = () => {
        if (t.ended || t.ws !== ws) return;
        if (t.id && t.retries < RETRIES) {  // a blip: the proxy holds the session for a while
          t.retries += 1;
          say("The connection to the proxy was lost; reconnecting…", "muted");
          t.pane.dataset.state = "reconnecting";
          setTimeout(connect, Math.min(500 * t.retries, 3000));
          return;
        }
        t.term.options.disableStdin = true;
        say("The connection to the proxy was lost.", "error");
        t.pane.dataset.state = "closed";
      };
    }
    t.bye = () => {
      t.ended = true;
      if (t.ws && t.ws.readyState === WebSocket.OPEN) t.ws.send(JSON.stringify({ type: "bye" }));
    };
    connect();
    return t;
  }

  const node = holder.dataset.node;
  const login = holder.dataset.login;
  open(node, login);
  document.getElementById("new-tab").addEventListener("click", () => open(node, login));
  tabs.addEventListener("keydown", (event) => {
    const i = all.indexOf(active);
    if (event.key === "ArrowRight" && i < all.length - 1) select(all[i + 1]);
    else if (event.key === "ArrowLeft" && i > 0) select(all[i - 1]);
    else return;
    active.tab.focus();
  });
  window.addEventListener("resize", () => { if (active) active.fit.fit(); });
  window.addEventListener("pagehide", () => all.forEach((t) => t.bye()));

  // Files: upload without leaving the page; download is a plain GET (a file save).
  const filesStatus = document.getElementById("files-status");
  const upload = document.getElementById("upload");
  if (upload) {
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      filesStatus.textContent = "Uploading…";
      filesStatus.className = "muted";
      try {
        const resp = await fetch(upload.action, {
          method: "POST", credentials: "same-origin", body: new FormData(upload),
        });
        const data = await resp.json().catch(() => ({}));
        filesStatus.textContent = data.message
          || (data.error && data.error.message) || `The upload failed (HTTP ${resp.status}).`;
        filesStatus.className = resp.ok ? "ok" : "error";
      } catch (err) {
        filesStatus.textContent = `The upload failed: ${err.message || err}`;
        filesStatus.className = "error";
      }
    });
  }
})();
