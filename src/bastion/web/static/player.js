// The recording player (docs/web-ui.md): xterm.js replays an asciicast v2 file with its own
// timing. Play/pause, seek, speed, and "skip idle" (pauses longer than two seconds shrink to
// two). The cast comes from /web/recordings/ID/cast (audited on the server as recording.view).
// No inline code: the CSP allows scripts from this origin only, and <style> elements only with
// the page's nonce (xterm.js writes its measured cell sizes into one).
"use strict";

(() => {
  const box = document.getElementById("player");
  const status = document.getElementById("player-status");
  const playButton = document.getElementById("play");
  const seek = document.getElementById("seek");
  const clock = document.getElementById("clock");
  const speedSelect = document.getElementById("speed");
  const skipIdle = document.getElementById("skip-idle");
  const IDLE = 2.0;
  if (!box || typeof Terminal === "undefined") {
    if (status) status.textContent = "The terminal library did not load (see the server log).";
    return;
  }
  window.bastionStyleNonce(box.dataset.styleNonce || "");
  const say = (text, kind) => { status.textContent = text; status.className = kind || "muted"; };
  const setState = (state) => { box.dataset.state = state; };
  const fmt = (s) => {
    const t = Math.max(0, Math.floor(s));
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = String(t % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
  };

  let term = null;
  let header = null;
  let events = [];   // [time, code, data] as recorded
  let times = [];    // the player's timeline (idle skipped or not)
  let position = 0;  // seconds on that timeline
  let next = 0;      // index of the next event to apply
  let playing = false;
  let wallStart = 0;
  let posStart = 0;
  let timer = null;

  const total = () => (times.length ? times[times.length - 1] : 0);
  const speed = () => Number(speedSelect.value) || 1;

  function timeline() {
    times = [];
    let prev = 0;
    let acc = 0;
    for (const [t] of events) {
      const gap = Math.max(0, t - prev);
      acc += skipIdle.checked ? Math.min(gap, IDLE) : gap;
      times.push(acc);
      prev = t;
    }
    seek.max = String(total());
  }

  function apply(from, to) {
    let out = "";
    for (let i = from; i < to; i++) {
      const [, code, data] = events[i];
      if (code === "o") {
        out += data;
      } else if (code === "r") {
        const [cols, rows] = String(data).split("x").map(Number);
        if (out) { term.write(out); out = ""; }
        if (cols > 0 && rows > 0) term.resize(cols, rows);
      }
    }
    if (out) term.write(out);
  }

  function show() {
    seek.value = String(position);
    clock.textContent = `${fmt(position)} / ${fmt(total())}`;
  }

  function seekTo(target) {
    const to = Math.max(0, Math.min(target, total()));
    let index = 0;
    while (index < times.length && times[index] <= to) index++;
    if (index < next) {
      term.reset();
      term.resize(header.width, header.height);
      apply(0, index);
    } else {
      apply(next, index);
    }
    next = index;
    position = to;
    show();
  }

  function tick() {
    if (!playing) return;
    const target = posStart + ((performance.now() - wallStart) / 1000) * speed();
    seekTo(target);
    if (next >= events.length) {
      pause();
      position = total();
      show();
      setState("ended");
      say("The end of the recording.", "ok");
      return;
    }
    const wait = Math.max(0, (times[next] - position) / speed()) * 1000;
    timer = setTimeout(tick, Math.min(wait, 250));
  }

  function play() {
    if (next >= events.length) seekTo(0);
    playing = true;
    wallStart = performance.now();
    posStart = position;
    playButton.textContent = "Pause";
    setState("playing");
    say("Playing.", "muted");
    tick();
  }

  function pause() {
    playing = false;
    if (timer) clearTimeout(timer);
    timer = null;
    playButton.textContent = "Play";
    if (box.dataset.state === "playing") setState("paused");
  }

  async function load() {
    const resp = await fetch(box.dataset.src, { credentials: "same-origin" });
    const text = await resp.text();
    if (!resp.ok) {
      let message = `HTTP ${resp.status}`;
      try { message = JSON.parse(text).error.message; } catch { /* not JSON */ }
      throw new Error(message);
    }
    const lines = text.split("\n").filter((l) => l.trim());
    header = JSON.parse(lines[0]);
    if (header.version !== 2) throw new Error("not an asciicast v2 recording");
    events = lines.slice(1).map((l) => JSON.parse(l)).filter((e) => Array.isArray(e));
    term = new Terminal({
      cols: header.width || 80, rows: header.height || 24, disableStdin: true,
      scrollback: 5000, fontSize: 14, cursorBlink: false,
    });
    term.open(box);
    timeline();
    show();
    playButton.disabled = false;
    seek.disabled = false;
    setState("ready");
    say(`${events.length} events; press Play.`, "muted");
  }

  playButton.addEventListener("click", () => (playing ? pause() : play()));
  seek.addEventListener("input", () => {
    const resume = playing;
    pause();
    seekTo(Number(seek.value));
    if (resume) play(); else setState("paused");
  });
  speedSelect.addEventListener("change", () => { if (playing) { pause(); play(); } });
  skipIdle.addEventListener("change", () => {
    // keep the same event under the cursor on the new timeline
    const resume = playing;
    pause();
    const index = next;
    timeline();
    position = index > 0 ? times[index - 1] : 0;
    show();
    if (resume) play();
  });
  load().catch((err) => { setState("error"); say(err.message || String(err), "error"); });
})();
