// The admin pages (docs/web-ui.md): confirmations, and MFA for admin actions before a change.
// Forms marked data-admin-change are posted as usual; when the page's <meta name="admin-mfa">
// says "required", the security key signs a challenge bound to exactly this form's action
// and fields first (POST /web/admin/mfa/begin), and the assertion travels in the hidden field
// mfa_assertion. No inline code anywhere: the CSP allows scripts from this origin only.
"use strict";

(() => {
  const { b64uToBuf, assertionJSON } = window.bastionWebAuthn;
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.content : "";
  };

  function showError(form, text) {
    let el = form.querySelector(".mfa-error");
    if (!el) {
      el = document.createElement("p");
      el.className = "mfa-error error";
      el.setAttribute("role", "alert");
      form.appendChild(el);
    }
    el.textContent = text;
  }

  async function withKey(form) {
    const fields = {};
    new FormData(form).forEach((value, key) => {
      if (typeof value === "string" && key !== "csrf_token" && key !== "mfa_assertion") {
        fields[key] = value.replace(/\r\n/g, "\n");
      }
    });
    const action = new URL(form.action, location.href).pathname;
    const resp = await fetch("/web/admin/mfa/begin", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": meta("csrf-token") },
      body: JSON.stringify({ action, fields }),
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
        throw new Error("The security key was not used in time (or the prompt was cancelled); "
          + "nothing was changed. Submit again to retry.");
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
    const mfa = meta("admin-mfa") === "required";
    document.querySelectorAll("form").forEach((form) => {
      form.addEventListener("submit", (event) => {
        const question = form.dataset.confirm;
        if (question && !window.confirm(question)) {
          event.preventDefault();
          return;
        }
        if (mfa && form.hasAttribute("data-admin-change")) {
          event.preventDefault();
          form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; });
          withKey(form).catch((err) => {
            form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = false; });
            showError(form, err.message || String(err));
          });
        }
      });
    });
  });
})();
