// The account page (docs/web-ui.md): removing a device and changing the password need a fresh
// proof from one of the user's devices. With a TOTP code typed in the form, the form is posted
// as is; otherwise, when the user has a security key, the key signs a challenge bound to the
// change (POST /web/account/challenge {scope}: password:change or mfa:remove:<name>) and the
// assertion travels in the hidden field mfa_assertion. No inline code: the CSP forbids it.
"use strict";

(() => {
  const { b64uToBuf, assertionJSON } = window.bastionWebAuthn;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function showError(form, text) {
    let el = form.querySelector(".mfa-error");
    if (!el) {
      el = document.createElement("p");
      el.className = "notice error mfa-error";
      el.setAttribute("role", "alert");
      form.prepend(el);
    }
    el.textContent = text;
  }

  async function withProof(form) {
    const resp = await fetch("/web/account/challenge", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({ scope: form.dataset.scope }),
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
        throw new Error("The security key was not used (or the prompt was cancelled); nothing "
          + "was changed. Submit again, or type a TOTP code.");
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
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-account-mfa]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        const question = form.dataset.confirm;
        if (question && !window.confirm(question)) {
          event.preventDefault();
          return;
        }
        const otp = form.querySelector("input[name=otp]");
        if (otp && otp.value.trim()) return;  // a TOTP code: posted as is
        event.preventDefault();
        form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; });
        withProof(form).catch((err) => {
          form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = false; });
          showError(form, err.message || String(err));
        });
      });
    });
  });
})();
