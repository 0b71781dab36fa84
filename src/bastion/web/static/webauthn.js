// The WebAuthn ceremonies of the login pages (no framework, no inline script: the CSP forbids it).
// Buttons carry data-ceremony="register|verify|passkey|password-key"; the server answers JSON:
//   POST <begin>  -> WebAuthn options (base64url fields), POST <finish> {credential, ...} -> {redirect|message}
// The CSRF token travels in the X-CSRF-Token header (double submit with the HttpOnly cookie).
"use strict";

const { b64uToBuf, bufToB64u } = window.bastionWebAuthn;

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const status = (text, ok) => {
  const el = document.getElementById("webauthn-status");
  el.textContent = text;
  el.className = ok ? "ok" : "error";
};

async function post(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body || {}),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error((data.error && data.error.message) || `HTTP ${resp.status}`);
  return data;
}

function creationOptions(o) {
  o.challenge = b64uToBuf(o.challenge);
  o.user.id = b64uToBuf(o.user.id);
  (o.excludeCredentials || []).forEach((c) => { c.id = b64uToBuf(c.id); });
  return o;
}

function requestOptions(o) {
  o.challenge = b64uToBuf(o.challenge);
  (o.allowCredentials || []).forEach((c) => { c.id = b64uToBuf(c.id); });
  return o;
}

function credentialJSON(cred) {
  const r = cred.response;
  const out = {
    id: cred.id,
    rawId: bufToB64u(cred.rawId),
    type: cred.type,
    clientExtensionResults: cred.getClientExtensionResults(),
    authenticatorAttachment: cred.authenticatorAttachment || undefined,
    response: { clientDataJSON: bufToB64u(r.clientDataJSON) },
  };
  if (r.attestationObject) {
    out.response.attestationObject = bufToB64u(r.attestationObject);
    if (r.getTransports) out.response.transports = r.getTransports();
  } else {
    out.response.authenticatorData = bufToB64u(r.authenticatorData);
    out.response.signature = bufToB64u(r.signature);
    if (r.userHandle) out.response.userHandle = bufToB64u(r.userHandle);
  }
  return out;
}

async function run(button) {
  const kind = button.dataset.ceremony;
  const base = button.dataset.endpoint;
  status("Waiting for your security key...", true);
  try {
    let result;
    if (kind === "register") {
      const name = document.getElementById("device-name").value;
      const passkey = document.getElementById("device-passkey").checked;
      const options = await post(`${base}/begin`, { passkey });
      const cred = await navigator.credentials.create({ publicKey: creationOptions(options) });
      result = await post(`${base}/finish`, { name, passkey, credential: credentialJSON(cred) });
    } else if (kind === "password-key") {
      const form = button.closest("form");
      const creds = { user: form.elements.user.value, password: form.elements.password.value };
      const options = await post(`${base}/begin`, creds);
      const cred = await navigator.credentials.get({ publicKey: requestOptions(options) });
      result = await post(`${base}/finish`, { ...creds, credential: credentialJSON(cred) });
    } else {
      const options = await post(`${base}/begin`, {});
      const cred = await navigator.credentials.get({ publicKey: requestOptions(options) });
      const then = button.dataset.then ? { then: button.dataset.then } : {};  // app step-up
      result = await post(`${base}/finish`, { credential: credentialJSON(cred), ...then });
    }
    if (result.redirect) {
      window.location.assign(result.redirect);
      return;
    }
    status(result.message || "Done.", true);
    if (button.hasAttribute("data-reload")) window.location.reload();  // the account page's list
  } catch (err) {
    status(err.message || String(err), false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-ceremony]").forEach((button) => {
    button.addEventListener("click", (event) => { event.preventDefault(); run(button); });
  });
});
