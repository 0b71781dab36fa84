// base64url <-> ArrayBuffer and the JSON of a WebAuthn assertion: the one copy the login pages
// (webauthn.js), the admin pages (admin.js) and the terminal (terminal.js) share. Loaded before
// them (deferred scripts run in order); no inline code: the CSP allows scripts from this origin.
"use strict";

window.bastionWebAuthn = (() => {
  const b64uToBuf = (s) => {
    const pad = "=".repeat((4 - (s.length % 4)) % 4);
    const bin = atob((s + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  };
  const bufToB64u = (buf) => {
    let bin = "";
    new Uint8Array(buf).forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const assertionJSON = (cred) => {
    const r = cred.response;
    const out = {
      id: cred.id,
      rawId: bufToB64u(cred.rawId),
      type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: {
        clientDataJSON: bufToB64u(r.clientDataJSON),
        authenticatorData: bufToB64u(r.authenticatorData),
        signature: bufToB64u(r.signature),
      },
    };
    if (r.userHandle) out.response.userHandle = bufToB64u(r.userHandle);
    return out;
  };
  return Object.freeze({ b64uToBuf, bufToB64u, assertionJSON });
})();
