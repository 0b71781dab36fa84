// xterm.js writes its measured cell sizes into a <style> element it creates, and the CSP allows
// <style> elements only with the page's nonce: bastionStyleNonce(nonce) gives every <style>
// created on this page that nonce. Used by the terminal, join and player pages (the nonce comes
// from their terminal element's data-style-nonce).
"use strict";

window.bastionStyleNonce = (nonce) => {
  if (!nonce) return;
  const createElement = Document.prototype.createElement;
  document.createElement = function (tag, options) {
    const element = createElement.call(this, tag, options);
    if (String(tag).toLowerCase() === "style") {
      element.nonce = nonce;
      element.setAttribute("nonce", nonce);
    }
    return element;
  };
};
