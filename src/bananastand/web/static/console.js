// Small behaviours shared by console pages: copy buttons, confirmations, and times
// shown in the viewer's own time zone.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  // An input holds its text in `value`; a <pre> (a snippet) in its text.
  const text = "value" in field ? field.value : field.textContent;
  if (field.select) field.select();
  else window.getSelection().selectAllChildren(field);
  try {
    await navigator.clipboard.writeText(text);
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

// Times: the server writes <time datetime="…Z">YYYY-MM-DD HH:MM UTC</time> (what a
// page without scripts shows); here they become the viewer's local time and how
// long ago (or ahead) it is, with the full date, time and zone in the tooltip.
const LOCAL = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const FULL = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });
const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["year", 365 * 86400],
  ["month", 30 * 86400],
  ["week", 7 * 86400],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

function localTime(date) {
  const part = Object.fromEntries(LOCAL.formatToParts(date).map((p) => [p.type, p.value]));
  return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}`;
}

function relativeTime(date, now) {
  const seconds = (date.getTime() - now) / 1000;
  if (Math.abs(seconds) < 45) return RELATIVE.format(0, "second"); // "now"
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size || unit === "second") {
      return RELATIVE.format(Math.round(seconds / size), unit);
    }
  }
  return "";
}

function showTimes() {
  const now = Date.now();
  for (const element of document.querySelectorAll("time[datetime]")) {
    const date = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) continue;
    element.textContent = `${localTime(date)} (${relativeTime(date, now)})`;
    element.title = FULL.format(date);
  }
}

showTimes();
setInterval(showTimes, 30000); // relative times move on while the page stays open
