// A customer's page: the risk score after each test, as a line chart (oldest first).
"use strict";

const scoreCanvas = document.getElementById("score-chart");
if (scoreCanvas) {
  const points = JSON.parse(scoreCanvas.dataset.points);
  new Chart(scoreCanvas, {
    type: "line",
    data: {
      labels: points.map((p) => localTime(p.stopTime)),
      datasets: [{ label: "risk score", data: points.map((p) => p.score),
                   borderColor: "#1f77b4", backgroundColor: "#1f77b4", pointRadius: 4 }],
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      plugins: { legend: { display: false } },
      scales: {
        x: { title: { display: true, text: "test stopped (your time)" } },
        // The sign is explained above the chart (#score-sign), as on the graph page.
        y: { title: { display: true, text: "risk score (s)" } },
      },
    },
  });
}
