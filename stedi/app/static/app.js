// Shared by every page: the CSRF header for API calls and the service status banner.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

async function refreshStatus() {
  const banner = document.getElementById("service-status");
  try {
    const response = await fetch("/health");
    const data = await response.json();
    // Logged in: what is wrong; otherwise only up or down.
    const problems = data.problems
      || (data.status === "up" ? [] : ["The STEDI app cannot reach its database; retrying…"]);
    banner.textContent = problems.join(" · ");
    banner.hidden = problems.length === 0;
  } catch (error) {
    banner.textContent = "The STEDI app is not answering; retrying…";
    banner.hidden = false;
  }
}
refreshStatus();
setInterval(refreshStatus, 5000);

// Times come as ISO 8601 in UTC (<time datetime>); each is shown in the viewer's time zone.
function localTime(iso) {
  const d = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} `
    + `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function showLocalTimes() {
  document.querySelectorAll("time[datetime]").forEach((element) => {
    element.textContent = localTime(element.dateTime);
    element.title = element.dateTime;  // the UTC time on hover
  });
}
showLocalTimes();
