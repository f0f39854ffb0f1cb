// Generations in progress refresh their page when they end: each element with
// `data-poll` names its generation's JSON, asked again at a growing interval.
"use strict";
(() => {
  const urls = [...document.querySelectorAll("[data-poll]")].map((el) => el.dataset.poll);
  if (!urls.length) return;
  let delay = 1000;
  const ended = async (url) => {
    const answer = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!answer.ok || answer.redirected) throw new Error(`status ${answer.status}`);
    return (await answer.json()).data.processingStatus !== "processing";
  };
  const check = async () => {
    let done;
    try {
      done = (await Promise.all(urls.map(ended))).some(Boolean);
    } catch (error) {
      if (!(error instanceof TypeError)) return; // signed out or gone: leave the page be
      // (a TypeError is the network: the server may be restarting; ask again later)
    }
    if (done === true) {
      window.location.reload();
      return;
    }
    delay = Math.min(delay * 1.5, 10000);
    window.setTimeout(check, delay);
  };
  window.setTimeout(check, delay);
})();
