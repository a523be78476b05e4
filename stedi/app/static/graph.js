// The live risk graph: Server-Sent Events from the app's consumer of the output topic.
"use strict";

const canvas = document.getElementById("risk-chart");
const ROUND = Number(canvas.dataset.round);
const tableBody = document.querySelector("#points tbody");
const streamState = document.getElementById("stream-state");

const chart = new Chart(canvas, {
  type: "scatter",
  data: { datasets: [{ label: "risk score", data: [], backgroundColor: "#1f77b4", pointRadius: 5 }] },
  options: {
    animation: false,
    plugins: { legend: { display: false } },  // the page heading is the graph's title
    scales: {
      x: {
        title: { display: true, text: "birth year" },
        ticks: { precision: 0, callback: (value) => String(value) },  // 1950, not 1,950
      },
      // The sign as the original computes it: previous two tests minus the recent two.
      y: { title: { display: true, text: "risk score (s): > 0 improved, < 0 deteriorated" } },
    },
  },
});

function addPoint(point) {
  const points = chart.data.datasets[0].data;
  if (points.length >= ROUND) {  // one round of simulated customers: start over
    points.length = 0;
    tableBody.replaceChildren();
  }
  points.push({ x: point.birthYear, y: point.score });
  const row = tableBody.insertRow();
  row.insertCell().textContent = String(point.birthYear);
  row.insertCell().textContent = String(point.score);
}

function connect() {
  const source = new EventSource("/api/risk-stream");
  source.addEventListener("open", () => { streamState.textContent = "live"; });
  source.addEventListener("round", (event) => {
    chart.data.datasets[0].data.length = 0;
    tableBody.replaceChildren();
    JSON.parse(event.data).forEach(addPoint);
    chart.update();
  });
  source.addEventListener("point", (event) => {
    addPoint(JSON.parse(event.data));
    chart.update();
  });
  source.addEventListener("error", () => {
    // The server ended the stream (the browser fell behind, the session ended) or the app is
    // away. EventSource retries by itself; when it gives up (an HTTP error such as 401 once
    // the session has ended), go to the login page or start a new stream.
    streamState.textContent = "reconnecting…";
    if (source.readyState === EventSource.CLOSED) setTimeout(restart, 2000);
  });
}

async function restart() {
  try {
    const response = await fetch("/api/simulation");
    if (response.status === 401) {
      window.location.assign("/login");
      return;
    }
  } catch (error) {
    // the app is not answering: try again below
  }
  connect();
}
connect();
