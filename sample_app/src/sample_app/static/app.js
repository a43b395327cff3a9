// The captcha page: no framework, no CDN, so it works offline.
// DOM contract (browser test): img#captcha-image[data-captcha-id] is set once the image has
// loaded; #result[data-state] is "success" or "error" with a human text.
"use strict";

(function () {
  const form = document.getElementById("captcha-form");
  const image = document.getElementById("captcha-image");
  const refresh = document.getElementById("refresh");
  const answer = document.getElementById("answer");
  const verify = document.getElementById("verify");
  const result = document.getElementById("result");
  let current = null; // {id, image_url, verify_url} of the captcha shown

  function show(state, text) {
    result.dataset.state = state;
    result.textContent = text;
  }

  function clearResult() {
    delete result.dataset.state;
    result.textContent = "";
  }

  async function call(method, url, body) {
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new Error("The service cannot be reached. Check your connection.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      // A proxy error page, not the API: fall through with the status.
    }
    if (!response.ok) {
      const error = new Error((data && data.message) || `The service answered ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function load() {
    current = null;
    image.removeAttribute("data-captcha-id");
    refresh.disabled = true;
    try {
      const captcha = await call("POST", form.dataset.api, {});
      await new Promise((resolve, reject) => {
        image.onload = resolve;
        image.onerror = () => reject(new Error("The captcha image could not be loaded."));
        image.src = captcha.image_url;
      });
      current = captcha;
      image.dataset.captchaId = captcha.id;
      answer.value = "";
      answer.focus();
    } catch (error) {
      image.removeAttribute("src");
      show("error", error.message);
    } finally {
      refresh.disabled = false;
    }
  }

  async function check() {
    if (!current) {
      show("error", "No captcha is shown. Press “New captcha”.");
      return;
    }
    const text = answer.value.trim();
    if (!text) {
      show("error", "Type the characters you see first.");
      answer.focus();
      return;
    }
    let gone = true; // a verified captcha is used up, right or wrong
    verify.disabled = true;
    try {
      const outcome = await call("POST", current.verify_url, { answer: text });
      if (outcome.valid) {
        show("success", "Correct");
      } else {
        show("error", "Wrong answer. Here is a new captcha.");
      }
    } catch (error) {
      show("error", error.message);
      // 404: expired or used. Other errors (429, 400, 503) left the captcha as it was.
      gone = error.status === 404;
    } finally {
      verify.disabled = false;
    }
    if (gone) {
      load();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    check();
  });
  refresh.addEventListener("click", () => {
    clearResult();
    load();
  });
  load();
})();
