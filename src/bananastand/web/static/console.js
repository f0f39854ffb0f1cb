// Small behaviours shared by console pages: copy buttons and confirmations.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  const status = button.parentElement.querySelector('[role="status"]');
  if (status) status.textContent = "Copied to the clipboard.";
  setTimeout(() => {
    button.textContent = "Copy";
    if (status) status.textContent = "";
  }, 2000);
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
