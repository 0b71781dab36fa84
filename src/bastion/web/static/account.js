// The account page (docs/web-ui.md): removing a device and changing the password need a fresh
// proof from one of the user's devices. With a TOTP code typed in the form, the form is posted
// as is; otherwise, when the user has a security key, the key signs a challenge bound to the
// change (POST /web/account/challenge {scope}: password:change or mfa:remove:<name>) and the
// assertion travels in the hidden field mfa_assertion. No inline code: the CSP forbids it.
"use strict";

(() => {
  const { submitWithKey } = window.bastionWebAuthn;
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

  const withProof = (form) => submitWithKey(
    form, "/web/account/challenge", { scope: form.dataset.scope }, csrf(),
    "The security key was not used (or the prompt was cancelled); nothing was changed. "
      + "Submit again, or type a TOTP code.",
  );

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
