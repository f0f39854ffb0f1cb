// The playground: shows the cost, then runs a stream-mode generation and follows
// its server-sent events (progress, previews, the final images).
"use strict";
(() => {
  const form = document.getElementById("playground");
  const models = JSON.parse(document.getElementById("models-data").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const model = $("model"), ratio = $("ratio"), quantity = $("quantity");

  const current = () => models.find((m) => m.name === model.value) || models[0];

  function refsCount() {
    const urls = $("ref-urls").value.split("\n").filter((line) => line.trim());
    return $("ref-files").files.length + urls.length;
  }

  function updateModel() {
    const m = current();
    const previous = ratio.value;
    ratio.replaceChildren(new Option("default", "default"));
    for (const r of m.aspectRatios) ratio.add(new Option(r, r));
    ratio.value = m.aspectRatios.includes(previous) ? previous : "default";
    ratio.disabled = !m.supportsAspectRatio;
    quantity.max = m.maxQuantity;
    $("references").disabled = !m.supportsImageInput;
    updateCost();
  }

  function updateCost() {
    const m = current();
    const n = Math.max(1, Math.min(Number(quantity.value) || 1, m.maxQuantity));
    const unit = m.creditsCost + m.extraImageCost * Math.max(0, refsCount() - 1);
    const cost = unit * (m.streaming ? 1 : n);
    $("cost").textContent = String(cost);
    $("cost-unit").textContent = cost === 1 ? "credit" : "credits";
  }

  const asDataUrl = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`Could not read ${file.name}`));
    reader.readAsDataURL(file);
  });

  function show(event) {
    $("progress").value = event.progress;
    $("progress-label").textContent = `Progress: ${event.progress}%`;
    $("message").textContent = event.message;
    const data = event.data || {};
    if (data.previewImage) {
      $("preview").src = data.previewImage;
      $("preview").hidden = false;
    }
    if (event.type === "complete" || event.type === "error") {
      $("preview").hidden = true;
      for (const url of data.imageUrls || []) {
        const link = document.createElement("a");
        link.href = url;
        const img = document.createElement("img");
        img.src = url;
        img.alt = `Generated image for: ${$("prompt").value.slice(0, 100)}`;
        link.append(img);
        $("images").append(link);
      }
      if (typeof data.remainingCredits === "number") {
        $("balance").textContent = String(data.remainingCredits);
      }
      if (data.generationId) {
        $("detail-link").href = `/console/generations/${data.generationId}`;
        $("after").hidden = false;
      }
    }
  }

  async function run(event) {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) {
      $("message").textContent = "Write a prompt first.";
      $("prompt").focus();
      return;
    }
    $("run").disabled = true;
    $("images").replaceChildren();
    $("after").hidden = true;
    $("progress").value = 0;
    $("message").textContent = "Sending…";
    try {
      const refs = $("ref-urls").value.split("\n").map((l) => l.trim()).filter(Boolean);
      for (const file of $("ref-files").files) refs.push(await asDataUrl(file));
      const response = await fetch("/console/playground/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({
          prompt,
          selectedModel: model.value,
          aspectRatio: ratio.disabled ? "default" : ratio.value,
          quantity: Number(quantity.value) || 1,
          referenceImageUrls: refs.length ? refs : null,
        }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || `The server answered ${response.status}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of block.split("\n")) {
            if (line.startsWith("data: ")) show(JSON.parse(line.slice(6)));
          }
        }
      }
    } catch (error) {
      $("message").textContent = error.message;
    } finally {
      $("run").disabled = false;
    }
  }

  model.addEventListener("change", updateModel);
  quantity.addEventListener("input", updateCost);
  $("ref-urls").addEventListener("input", updateCost);
  $("ref-files").addEventListener("change", updateCost);
  form.addEventListener("submit", run);
  updateModel();
})();
