// The graph page's status panel: one line per part of the pipeline, from /api/pipeline-status
// (the app reads the parts' metrics, once for all viewers), every REFRESH_MS.
"use strict";

const REFRESH_MS = 3000;
const statusBody = document.querySelector("#pipeline-status tbody");
const COLUMNS = ["age", "rowsPerSecond", "batchSeconds", "offsetsBehind", "stateRows", "deadLetters"];

function shown(value) {
  if (value === undefined || value === null) return "";
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function render(lines) {
  statusBody.replaceChildren();
  for (const line of lines) {
    const row = statusBody.insertRow();
    row.dataset.part = line.name;
    row.insertCell().textContent = line.name;
    const state = row.insertCell();
    state.textContent = line.state;
    state.className = `state-${line.state}`;
    for (const column of COLUMNS) row.insertCell().textContent = shown(line[column]);
    // A job run alone (its wrapper) also says so, and which figures it lacks.
    row.insertCell().textContent = [...line.reasons, line.note].filter(Boolean).join("; ");
  }
}

async function refresh() {
  try {
    const response = await fetch("/api/pipeline-status", { credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/login"); return; }
    if (response.ok) render((await response.json()).lines);
  } catch (error) {
    // The app itself is away: the graph's own line says so; try again at the next tick.
  } finally {
    window.setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
