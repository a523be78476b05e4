// The rapid step test: Start, one click per step, stored automatically at 30 steps.
"use strict";

const TOTAL_STEPS = 30;
const el = (id) => document.getElementById(id);
let startTime = null;
let steps = 0;
let ticker = null;

function show(id, text) {
  el(id).textContent = text;  // always text, never HTML
  el(id).hidden = !text;
}

el("start").addEventListener("click", () => {
  startTime = Date.now();
  steps = 0;
  el("steps").textContent = "0";
  el("step").disabled = false;
  el("start").disabled = true;
  show("result", "");
  show("test-error", "");
  ticker = setInterval(() => {
    el("elapsed").textContent = ((Date.now() - startTime) / 1000).toFixed(1);
  }, 100);
});

el("step").addEventListener("click", async () => {
  steps += 1;
  el("steps").textContent = String(steps);
  if (steps < TOTAL_STEPS) return;
  const stopTime = Date.now();
  clearInterval(ticker);
  el("step").disabled = true;
  el("start").disabled = false;
  try {
    const data = await api("/api/tests", {
      email: el("customer").value, startTime, stopTime, totalSteps: TOTAL_STEPS,
    });
    const seconds = (data.test.testTime / 1000).toFixed(1);
    const risk = data.score === null ? "risk score after the 4th test" : `risk score ${data.score}`;
    show("result", `Stored: ${data.test.customer.customerName}, ${seconds} s, ${risk}.`);
  } catch (error) {
    show("test-error", `Not stored: ${error.message}`);
  }
});

function linkTests() {
  const email = el("customer").value;
  el("customer-tests").hidden = !email;
  el("customer-tests").href = `/customers/${encodeURIComponent(email)}`;
}
el("customer").addEventListener("change", linkTests);
linkTests();

async function refreshSimulation() {
  const data = await api("/api/simulation");
  el("simulation-toggle").checked = data.active;
  el("simulation-state").textContent = data.active ? `on, ${data.testsRun} tests` : "off";
}

el("simulation-toggle").addEventListener("change", async (event) => {
  try {
    await api("/api/simulation", { active: event.target.checked });
    await refreshSimulation();
  } catch (error) {
    el("simulation-toggle").checked = false;
    el("simulation-state").textContent = error.message;  // e.g. too many simulations running
  }
});
refreshSimulation();
setInterval(refreshSimulation, 3000);
