// The page of a one-tap action link (GET /v1/actions/<approval>/<decision>?t=...): its one
// button makes the POST that decides, and says what happened. Same origin, JSON only.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("act");
  const result = document.getElementById("result");
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.textContent = "…";
    let answer;
    try {
      const reply = await fetch(location.pathname + location.search, {
        method: "POST", cache: "no-store", credentials: "omit",
        headers: {"Content-Type": "application/json", Accept: "application/json"},
        body: "{}",
      });
      answer = await reply.json();
    } catch (e) {
      result.textContent = "The node cannot be reached: " + e.message;
      button.disabled = false;
      return;
    }
    if (answer.ok) {
      result.textContent = "Done: " + answer.data.decision + ".";
      result.dataset.state = "done";
    } else {
      result.textContent = answer.error.message + " (" + answer.error.code + ")";
      result.dataset.state = "refused";
    }
  });
});
