// The login form: the token goes to POST /login once, which answers with an HttpOnly session
// cookie; the token itself is kept nowhere in the page.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const input = document.getElementById("token");
  const message = document.getElementById("message");
  const wanted = new URLSearchParams(location.search).get("next") || "";
  // Only back into the page itself: never to another site ("//evil.example" is one).
  const next = /^\/ui(\/|$|\?)/.test(wanted) ? wanted : "/ui";

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    message.classList.remove("bad");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await Fleet.api("/login", { method: "POST", body: { token: input.value }, noRedirect: true });
      location.assign(next);
    } catch (error) {
      if (error.status === 409) {
        location.assign(next); // this worker needs no token
        return;
      }
      input.value = "";
      message.textContent = error.message;
      message.classList.add("bad");
      button.disabled = false;
    }
  });
});
