// base64url <-> ArrayBuffer, the JSON of a WebAuthn assertion, and a form posted with a key's
// assertion: the one copy the login pages (webauthn.js), the admin pages (admin.js), the account
// page (account.js) and the terminal (terminal.js) share. Loaded before them (deferred scripts
// run in order); no inline code: the CSP allows scripts from this origin.
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
  // POST ``body`` as JSON to ``url``; when the answer says a security key is required, sign its
  // options and put the assertion in the form's hidden field mfa_assertion; then submit the
  // form. ``cancelled`` is the error when the key was not used.
  const submitWithKey = async (form, url, body, csrfToken, cancelled) => {
    const resp = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify(body),
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error((data.error && data.error.message) || `HTTP ${resp.status}`);
    if (data.required) {
      const o = data.options;
      o.challenge = b64uToBuf(o.challenge);
      (o.allowCredentials || []).forEach((c) => { c.id = b64uToBuf(c.id); });
      let cred;
      try {
        cred = await navigator.credentials.get({ publicKey: o });
      } catch (err) {
        throw new Error(cancelled);
      }
      let input = form.querySelector("input[name=mfa_assertion]");
      if (!input) {
        input = document.createElement("input");
        input.type = "hidden";
        input.name = "mfa_assertion";
        form.appendChild(input);
      }
      input.value = JSON.stringify(assertionJSON(cred));
    }
    HTMLFormElement.prototype.submit.call(form);
  };
  return Object.freeze({ b64uToBuf, bufToB64u, assertionJSON, submitWithKey });
})();
