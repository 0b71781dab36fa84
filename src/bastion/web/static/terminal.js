// The web SSH terminal (docs/web-ui.md): xterm.js in the page, a WebSocket to the proxy.
// Binary frames carry the terminal's bytes both ways; text frames are JSON control messages.
// No inline code anywhere: the CSP allows scripts from this origin only, and <style> elements
// only with the page's nonce (xterm.js writes its measured cell sizes into one).
"use strict";

(() => {
  const box = document.getElementById("terminal");
  const status = document.getElementById("term-status");
  if (!box || typeof Terminal === "undefined") {
    if (status) status.textContent = "The terminal library did not load (see the server log).";
    return;
  }
  const nonce = box.dataset.styleNonce || "";
  const createElement = Document.prototype.createElement;
  document.createElement = function (tag, options) {
    const element = createElement.call(this, tag, options);
    if (String(tag).toLowerCase() === "style" && nonce) {
      element.nonce = nonce;
      element.setAttribute("nonce", nonce);
    }
    return element;
  };

  const say = (text, kind) => {
    status.textContent = text;
    status.className = kind;
  };
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();

  const query = new URLSearchParams({
    node: box.dataset.node, login: box.dataset.login, cols: term.cols, rows: term.rows,
  });
  const ws = new WebSocket(`wss://${location.host}/web/ssh/ws?${query}`);
  ws.binaryType = "arraybuffer";
  let ended = false;
  const encoder = new TextEncoder();
  const send = (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(data); };

  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    if (msg.type === "ready") {
      say(`Connected as ${msg.login} to ${msg.node}.`, "ok");
      box.dataset.state = "open";
      term.focus();
    } else if (msg.type === "error") {
      ended = true;
      say(msg.message, "error");
      box.dataset.state = "error";
    } else if (msg.type === "closed") {
      ended = true;
      say(`Session closed: ${msg.message}`, "error");
      box.dataset.state = "closed";
    }
  };
  ws.onclose = () => {
    term.options.disableStdin = true;
    if (!ended) {
      say("The connection to the proxy was lost.", "error");
      box.dataset.state = "closed";
    }
  };
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
  window.addEventListener("resize", () => fit.fit());
})();
