// The playground: checks the form against the model's limits (as the API does),
// shows the cost and the same request as code, then runs a stream-mode generation
// and follows its server-sent events: progress, previews, each image as soon as it
// is done, and the end (success, or an error with what was refunded). A running
// generation can be cancelled; a finished one rerun with the same settings.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("playground");
  const models = JSON.parse($("models-data").textContent);
  const limits = JSON.parse($("limits-data").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const model = $("model"), ratio = $("ratio"), quantity = $("quantity"), seed = $("seed");
  const bar = $("progress"), label = $("progress-label");
  const MAX_SEED = 2 ** 31 - 1;

  let run = null; // the run in progress: {id, charged, seed, started, body, shown, images}
  let last = null; // the last run's settings, for "Rerun"

  const current = () => models.find((m) => m.name === model.value) || models[0];
  const maxQuantity = (m) => (m.streaming ? 1 : Math.min(m.maxQuantity, limits.maxQuantity));
  const maxRefs = (m) => Math.min(m.maxReferenceImages, limits.maxReferences);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const refUrls = () => $("ref-urls").value.split("\n").map((l) => l.trim()).filter(Boolean);
  const refsCount = () => $("ref-files").files.length + refUrls().length;

  // --- the form's limits: a visible error by the field, never a silent change ---
  function fieldError(input, id, text) {
    const slot = $(id);
    slot.textContent = text || "";
    slot.hidden = !text;
    if (!input) return;
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  function quantityValue() {
    const raw = quantity.value.trim();
    const n = Number(raw);
    return raw !== "" && Number.isInteger(n) ? n : null;
  }

  function seedValue() {
    const raw = seed.value.trim();
    return raw === "" ? null : Number(raw);
  }

  const checks = {
    prompt(strict) {
      const length = $("prompt").value.trim().length;
      $("prompt-count").textContent = `${length} of ${limits.maxPromptLength} characters`;
      let text = "";
      if (length > limits.maxPromptLength) {
        text = `The prompt is ${length} characters long; the limit is ${limits.maxPromptLength}.`;
      } else if (strict && length === 0) {
        text = "Write a prompt first.";
      }
      fieldError($("prompt"), "prompt-error", text);
      return !text;
    },
    model() {
      const m = current();
      const text = m.requiresPro && !limits.isPro
        ? `${m.displayName} needs a Pro account; pick another model.` : "";
      fieldError(model, "model-error", text);
      return !text;
    },
    ratio() {
      const m = current();
      const ok = ratio.value === "default" || (m.supportsAspectRatio && m.aspectRatios.includes(ratio.value));
      fieldError(ratio, "ratio-error", ok ? "" : `${m.displayName} does not offer ${ratio.value}.`);
      return ok;
    },
    quantity() {
      const m = current(), max = maxQuantity(m), n = quantityValue();
      $("quantity-hint").textContent = max === 1
        ? `${m.displayName} makes 1 image per run.` : `1 to ${max} with ${m.displayName}.`;
      let text = "";
      if (n === null) text = `Enter a whole number from 1 to ${max}.`;
      else if (n < 1 || n > max) {
        text = `${m.displayName} makes at most ${plural(max, "image")} per run; you asked for ${n}.`;
        if (n < 1) text = "Quantity must be at least 1.";
      }
      fieldError(quantity, "quantity-error", text);
      return !text;
    },
    seed() {
      const n = seedValue();
      const ok = n === null || (Number.isInteger(n) && n >= 0 && n <= MAX_SEED);
      fieldError(seed, "seed-error", ok ? "" : `The seed is a whole number from 0 to ${MAX_SEED}.`);
      return ok;
    },
    references() {
      const m = current(), count = refsCount(), max = maxRefs(m);
      let text = "";
      const tooBig = [...$("ref-files").files].find((f) => f.size > limits.maxReferenceBytes);
      const badUrl = refUrls().find((u) => !/^(https?:\/\/|data:image\/)/i.test(u));
      if (count && !m.supportsImageInput) text = `${m.displayName} does not take reference images.`;
      else if (count > max) text = `${m.displayName} takes at most ${plural(max, "reference image")}; you gave ${count}.`;
      else if (tooBig) text = `${tooBig.name} is over ${Math.floor(limits.maxReferenceBytes / 1048576)} MB.`;
      else if (badUrl) text = `Not an http(s) or data:image URL: ${badUrl.slice(0, 60)}`;
      fieldError($("ref-urls"), "references-error", text);
      return !text;
    },
  };

  function validate(strict) {
    let first = null;
    const fields = [["prompt", $("prompt")], ["model", model], ["ratio", ratio],
      ["quantity", quantity], ["seed", seed], ["references", $("ref-urls")]];
    for (const [name, input] of fields) {
      if (!checks[name](strict) && !first) first = input;
    }
    return first;
  }

  // --- cost and code ----------------------------------------------------------
  function updateCost() {
    const m = current(), n = quantityValue();
    const cost = n !== null && n >= 1 && n <= maxQuantity(m)
      ? (m.creditsCost + m.extraImageCost * Math.max(0, refsCount() - 1)) * (m.streaming ? 1 : n)
      : null;
    $("cost").textContent = cost === null ? "—" : String(cost);
    $("cost-unit").textContent = cost === 1 ? "credit" : "credits";
  }

  function settings() {
    const refs = refUrls();
    for (const file of $("ref-files").files) refs.push(`data:${file.type};base64,… (${file.name})`);
    return {
      prompt: $("prompt").value.trim(),
      model: model.value,
      ratio: ratio.disabled ? "default" : ratio.value,
      quantity: quantityValue() ?? 1,
      seed: seedValue(),
      refs,
    };
  }

  const shellQuote = (text) => `'${text.replace(/'/g, "'\\''")}'`;
  const py = (value) => JSON.stringify(value);

  function openaiSize(r) {
    const known = { "1:1": "1024x1024", "3:2": "1536x1024", "2:3": "1024x1536",
      "16:9": "1792x1024", "9:16": "1024x1792" };
    if (r === "default") return null;
    if (known[r]) return known[r];
    const [w, h] = r.split(":").map(Number);
    return `${w * 256}x${h * 256}`;
  }

  function updateCode() {
    const s = settings(), base = limits.baseUrl;
    const body = { prompt: s.prompt, selectedModel: s.model };
    if (s.ratio !== "default") body.aspectRatio = s.ratio;
    body.quantity = s.quantity;
    if (s.refs.length) body.referenceImageUrls = s.refs;
    if (s.seed !== null) body.seed = s.seed;
    body.mode = "stream";
    $("code-curl").value = [
      `curl -sN ${shellQuote(`${base}/api/v1/generate`)} \\`,
      '  -H "Authorization: Bearer $BANANASTAND_API_KEY" \\',
      "  -H 'Content-Type: application/json' \\",
      `  -d ${shellQuote(JSON.stringify(body))}`,
    ].join("\n");

    const args = [py(s.prompt), `model=${py(s.model)}`];
    if (s.ratio !== "default") args.push(`aspect_ratio=${py(s.ratio)}`);
    args.push(`quantity=${s.quantity}`);
    if (s.refs.length) args.push(`reference_image_urls=${py(s.refs)}`);
    if (s.seed !== null) args.push(`seed=${s.seed}`);
    $("code-python").value = [
      "import os",
      "",
      "from bananastand.client import Client",
      "",
      `with Client(${py(base)}, api_key=os.environ["BANANASTAND_API_KEY"]) as nb:`,
      `    result = nb.generate(${args.join(", ")})`,
      "    print(result.image_urls)",
      '    print(nb.download(result, "out"))',
    ].join("\n");

    const size = openaiSize(s.ratio);
    const oargs = [`model=${py(s.model)}`, `prompt=${py(s.prompt)}`, `n=${s.quantity}`];
    if (size) oargs.push(`size=${py(size)}`);
    $("code-openai").value = [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      `client = OpenAI(api_key=os.environ["BANANASTAND_API_KEY"], base_url=${py(`${base}/v1`)})`,
      `images = client.images.generate(${oargs.join(", ")})`,
      "print([image.url for image in images.data])",
      ...(s.refs.length ? ["# Reference images: client.images.edit(image=[open(...), ...], ...)"] : []),
      ...(s.seed !== null ? ["# The OpenAI API has no seed; the native API above takes one."] : []),
    ].join("\n");
  }

  function updateModel() {
    const m = current();
    const previous = ratio.value;
    ratio.replaceChildren(new Option("default", "default"));
    for (const r of m.aspectRatios) ratio.add(new Option(r, r));
    ratio.value = m.aspectRatios.includes(previous) ? previous : "default";
    ratio.disabled = !m.supportsAspectRatio;
    quantity.max = String(maxQuantity(m));
    $("references").disabled = !m.supportsImageInput;
    for (const button of document.querySelectorAll("button.use-ref")) {
      button.disabled = !m.supportsImageInput;
    }
    refresh();
  }

  function refresh() {
    validate(false);
    updateCost();
    updateCode();
  }

  // --- the result ---------------------------------------------------------------
  function setProgress(value, text) {
    bar.value = value;
    label.textContent = text ?? `Progress: ${value}%`;
  }

  function resetResult() {
    bar.classList.remove("failed");
    label.classList.remove("failed");
    setProgress(0, "Progress: not started");
    $("message").textContent = "";
    $("run-error").hidden = true;
    $("run-error").replaceChildren();
    $("images").replaceChildren();
    $("preview").hidden = true;
    $("run-facts").hidden = true;
    $("after").hidden = true;
  }

  function showError(title, lines) {
    const box = $("run-error");
    const strong = document.createElement("strong");
    strong.textContent = title;
    box.replaceChildren(strong);
    for (const line of lines) {
      const p = document.createElement("p");
      p.textContent = line;
      box.append(p);
    }
    box.hidden = false;
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }

  function addImage(index, url, total) {
    const slots = run.images;
    if (slots[index]) return;
    const n = index + 1;
    const figure = document.createElement("figure");
    figure.className = "shot";
    figure.dataset.index = String(index);
    const link = document.createElement("a");
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    const img = document.createElement("img");
    img.src = url;
    img.alt = `Image ${n} for: ${run.body.prompt.slice(0, 100)}`;
    link.append(img);
    const caption = document.createElement("figcaption");
    const title = document.createElement("span");
    title.textContent = total > 1 ? `Image ${n} of ${total}` : "Image";
    const actions = document.createElement("span");
    actions.className = "shot-actions";
    const download = document.createElement("a");
    download.href = url;
    const extension = new URL(url, location.href).pathname.split(".").pop();
    download.download = `${run.id}_${index}.${extension}`;
    download.textContent = "Download";
    download.setAttribute("aria-label", `Download image ${n}`);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "Copy URL";
    copy.setAttribute("aria-label", `Copy the URL of image ${n}`);
    const use = document.createElement("button");
    use.type = "button";
    use.className = "use-ref";
    use.textContent = "Use as reference";
    use.setAttribute("aria-label", `Use image ${n} as a reference`);
    use.disabled = !current().supportsImageInput;
    const status = document.createElement("span");
    status.setAttribute("role", "status");
    status.className = "hint";
    copy.addEventListener("click", async () => {
      await copyText(url);
      status.textContent = "URL copied.";
    });
    use.addEventListener("click", () => {
      const urls = refUrls();
      if (!urls.includes(url)) $("ref-urls").value = [...urls, url].join("\n");
      status.textContent = "Added to the reference images.";
      refresh();
    });
    actions.append(download, copy, use);
    caption.append(title, actions, status);
    figure.append(link, caption);
    slots[index] = figure;
    const after = slots.slice(index + 1).find(Boolean);
    $("images").insertBefore(figure, after || null);
  }

  function onEvent(event) {
    const data = event.data || {};
    if (event.type === "status") {
      setProgress(event.progress);
      $("message").textContent = event.message;
      if (data.previewImage) {
        $("preview").src = data.previewImage;
        $("preview").hidden = false;
      }
      if (data.imageUrl) {
        $("preview").hidden = true;
        addImage(data.imageIndex, data.imageUrl, run.body.quantity);
      }
      return;
    }
    finish(event);
  }

  function finish(event) {
    const data = event.data || {};
    run.done = true;
    $("preview").hidden = true;
    const elapsed = (performance.now() - run.started) / 1000;
    const used = data.creditsUsed;
    const refunded = run.charged !== null && typeof used === "number" ? run.charged - used : null;
    const urls = data.imageUrls || [];
    urls.forEach((url, index) => addImage(index, url, urls.length));
    if (typeof data.remainingCredits === "number") $("balance").textContent = String(data.remainingCredits);
    const credits = [typeof used === "number" ? `${plural(used, "credit")} used` : null,
      refunded ? `${plural(refunded, "credit")} refunded` : null].filter(Boolean).join(", ");
    $("fact-seed").textContent = String(run.seed ?? "—");
    $("fact-elapsed").textContent = `${elapsed.toFixed(1)} s`;
    $("fact-credits").textContent = credits || "—";
    $("run-facts").hidden = false;
    const money = refunded === null ? []
      : [refunded > 0 ? `Refunded: ${plural(refunded, "credit")}.` : "Nothing was refunded.",
        `Charged: ${plural(used, "credit")}.`];
    if (event.type === "complete" && data.success && urls.length >= run.body.quantity) {
      setProgress(100, "Progress: 100%, done");
      $("message").textContent = event.message;
    } else if (event.type === "complete" && data.success) {
      // Fewer images than asked: the rest failed and were refunded. Shown as an
      // error, never as a full blue bar.
      bar.classList.add("failed");
      label.classList.add("failed");
      label.textContent = `Progress: done, ${urls.length} of ${run.body.quantity} images made`;
      $("message").textContent = "";
      showError(`${plural(run.body.quantity - urls.length, "image")} not made`, [
        event.message || "Some images could not be made.", ...money]);
    } else {
      // An error is never a full bar: the bar stays where the run stopped, in red.
      bar.classList.add("failed");
      label.classList.add("failed");
      label.textContent = `Progress: stopped at ${bar.value}%`;
      $("message").textContent = "";
      // Images shown while it ran are not kept (nor charged): take them away.
      $("images").replaceChildren();
      run.images = [];
      const title = data.warning ? "Blocked by the safety check" : "Generation failed";
      showError(title, [event.message || data.error || "The generation failed.", ...money]);
    }
    if (data.generationId) {
      $("detail-link").href = `/console/generations/${data.generationId}`;
      $("after").hidden = false;
    }
  }

  const asDataUrl = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}`));
    reader.readAsDataURL(file);
  });

  async function readStream(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) onEvent(JSON.parse(line.slice(6)));
        }
      }
    }
  }

  async function submit(event) {
    event.preventDefault();
    if (run) return;
    const invalid = validate(true);
    if (invalid) {
      invalid.focus();
      return;
    }
    resetResult();
    const s = settings();
    const refs = refUrls();
    $("run").disabled = true;
    $("message").textContent = "Sending…";
    run = { id: null, charged: null, seed: s.seed, started: performance.now(), images: [], done: false };
    try {
      for (const file of $("ref-files").files) refs.push(await asDataUrl(file));
      run.body = {
        prompt: s.prompt,
        selectedModel: s.model,
        aspectRatio: s.ratio,
        quantity: s.quantity,
        referenceImageUrls: refs.length ? refs : null,
        seed: s.seed,
      };
      const response = await fetch("/console/playground/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(run.body),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        resetResult();
        showError("Not sent", [body.error || `The server answered ${response.status}.`, "Nothing was charged."]);
        return;
      }
      run.id = response.headers.get("X-Generation-Id");
      run.charged = Number(response.headers.get("X-Credits-Charged") ?? NaN);
      if (Number.isNaN(run.charged)) run.charged = null;
      const balance = Number($("balance").textContent);
      if (run.charged !== null && !Number.isNaN(balance)) {
        $("balance").textContent = String(balance - run.charged);  // charged up front
      }
      run.seed = Number(response.headers.get("X-Generation-Seed") ?? s.seed);
      last = { ...s, refs, seed: run.seed };
      $("cancel").hidden = false;
      $("cancel").disabled = false;
      await readStream(response);
      if (!run.done) {
        showError("The connection was lost", ["The generation may still finish: see it in the history."]);
        $("detail-link").href = `/console/generations/${run.id}`;
        $("after").hidden = false;
      }
    } catch (error) {
      showError("Something went wrong", [error.message]);
    } finally {
      $("run").disabled = false;
      $("cancel").hidden = true;
      run = null;
    }
  }

  async function cancel() {
    if (!run || !run.id) return;
    $("cancel").disabled = true;
    $("message").textContent = "Cancelling…";
    const response = await fetch(`/console/playground/generate?id=${encodeURIComponent(run.id)}`, {
      method: "DELETE",
      headers: { "X-CSRF-Token": csrf },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      $("message").textContent = body.error || `Could not cancel (the server answered ${response.status}).`;
      $("cancel").disabled = false;
      return;
    }
    if (typeof body.remainingCredits === "number") $("balance").textContent = String(body.remainingCredits);
    // The stream's final event (an error: cancelled) follows and tells the rest.
  }

  function rerun() {
    if (!last || run) return;
    $("prompt").value = last.prompt;
    model.value = last.model;
    updateModel();
    ratio.value = last.ratio;
    quantity.value = String(last.quantity);
    seed.value = String(last.seed);
    $("ref-urls").value = last.refs.filter((r) => !r.startsWith("data:")).join("\n");
    refresh();
    form.requestSubmit();
  }

  model.addEventListener("change", updateModel);
  form.addEventListener("input", refresh);
  form.addEventListener("change", refresh);
  form.addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("rerun").addEventListener("click", rerun);
  updateModel();
})();
