// The admin pages (docs/web-ui.md): confirmations, and MFA for admin actions before a change.
// Forms marked data-admin-change are posted as usual; when the page's <meta name="admin-mfa">
// says "required", the security key signs a challenge bound to exactly this form's action
// and fields first (POST /web/admin/mfa/begin), and the assertion travels in the hidden field
// mfa_assertion. No inline code anywhere: the CSP allows scripts from this origin only.
"use strict";

(() => {
  const { submitWithKey } = window.bastionWebAuthn;
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

  function withKey(form) {
    const fields = {};
    new FormData(form).forEach((value, key) => {
      if (typeof value === "string" && key !== "csrf_token" && key !== "mfa_assertion") {
        fields[key] = value.replace(/\r\n/g, "\n");
      }
    });
    const action = new URL(form.action, location.href).pathname;
    return submitWithKey(
      form, "/web/admin/mfa/begin", { action, fields }, meta("csrf-token"),
      "The security key was not used in time (or the prompt was cancelled); nothing was "
        + "changed. Submit again to retry.",
    );
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
        // A preview button (data-preview, its own formaction) changes nothing: no key touch.
        const preview = event.submitter && event.submitter.hasAttribute("data-preview");
        if (mfa && !preview && form.hasAttribute("data-admin-change")) {
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
