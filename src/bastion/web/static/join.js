// Joining a live session in the browser (docs/moderated-sessions.md): xterm.js shows the
// session's output (binary WebSocket frames); a peer's keystrokes go back as binary frames
// (the server relays them only for peers); a moderator's Terminate button sends
// {type: "terminate"}; notices (who joined or left, paused, resumed) and the end are JSON.
// No inline code: the CSP allows scripts from this origin only, and <style> elements only with
// the page's nonce (xterm.js writes its measured cell sizes into one).
"use strict";

(() => {
  const pane = document.getElementById("join-terminal");
  const status = document.getElementById("join-status");
  if (!pane || typeof Terminal === "undefined") {
    if (status) status.textContent = "The terminal library did not load (see the server log).";
    return;
  }
  window.bastionStyleNonce(pane.dataset.styleNonce || "");

  const mode = pane.dataset.mode || "observer";
  const notices = document.getElementById("join-notices");
  const terminate = document.getElementById("join-terminate");
  const term = new Terminal({ cursorBlink: mode === "peer", scrollback: 5000, fontSize: 14,
    disableStdin: mode !== "peer" });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(pane);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());

  let ended = false;
  const say = (text, kind) => {
    status.textContent = text;
    status.className = kind;
  };
  const note = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    notices.appendChild(item);
  };

  const query = new URLSearchParams({ mode });
  const session = encodeURIComponent(pane.dataset.session || "");
  const ws = new WebSocket(`wss://${location.host}/web/sessions/${session}/join/ws?${query}`);
  ws.binaryType = "arraybuffer";
  const send = (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(data); };
  if (mode === "peer") {
    const encoder = new TextEncoder();
    term.onData((data) => send(encoder.encode(data)));
    term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  }
  if (terminate) {
    terminate.addEventListener("click", () => {
      if (window.confirm("Terminate this session for everyone?")) {
        send(JSON.stringify({ type: "terminate" }));
      }
    });
  }
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    if (msg.type === "ready") {
      say(`Joined as ${msg.mode}.`, "ok");
      pane.dataset.state = "open";
      if (mode === "peer") term.focus();
    } else if (msg.type === "notice") {
      note(msg.message);
    } else if (msg.type === "error") {
      ended = true;
      say(msg.message, "error");
      pane.dataset.state = "error";
    } else if (msg.type === "closed") {
      ended = true;
      say(`Session closed: ${msg.message}`, "error");
      pane.dataset.state = "closed";
      if (terminate) terminate.disabled = true;
    }
  };
  ws.onclose = () => {
    if (ended) return;
    say("The connection to the proxy was lost.", "error");
    pane.dataset.state = "closed";
  };
  window.addEventListener("pagehide", () => send(JSON.stringify({ type: "bye" })));
})();
