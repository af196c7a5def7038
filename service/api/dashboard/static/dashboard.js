// nobackfill dashboard: live job progress, confirmations, and admin actions through the JSON API.
// Cookie-authenticated writes send the CSRF header the API requires.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

async function api(method, url, body) {
  const init = { method, credentials: "same-origin", headers: { "X-Nobackfill-CSRF": "1" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function renderJob(row, job) {
  row.dataset.state = job.state;
  const pct = Math.round(job.progress * 100);
  row.querySelector(".state").textContent = job.state;
  row.querySelector(".fill").style.width = pct + "%";
  row.querySelector(".pct").textContent = pct + "%";
  row.querySelector(".message").textContent = job.message;
}

function followJob(row, onDone) {
  const id = row.dataset.jobId;
  const tick = async () => {
    try {
      const job = await api("GET", `/v1/jobs/${id}`);
      renderJob(row, job);
      if (TERMINAL.has(job.state)) { if (onDone) onDone(job); return; }
    } catch (err) { row.querySelector(".message").textContent = "polling failed: " + err.message; }
    setTimeout(tick, 400);
  };
  tick();
}

function jobRow(id) {
  const tr = document.createElement("tr");
  tr.className = "job new-job";
  tr.dataset.jobId = id;
  tr.innerHTML = `<td>#${id}</td><td class="state">queued</td>` +
    `<td><div class="bar"><span class="fill" style="width:0%"></span></div><small class="pct">0%</small></td>` +
    `<td class="message">queued</td>`;
  return tr;
}

document.addEventListener("DOMContentLoaded", () => {
  // live progress for every job that is not finished yet
  document.querySelectorAll("tr.job").forEach((row) => {
    if (!TERMINAL.has(row.dataset.state)) followJob(row);
  });

  document.querySelectorAll("button.activate").forEach((button) => {
    button.addEventListener("click", async () => {
      const { upgrade, transformation, force } = button.dataset;
      const warning = force === "true" ? "\nIt does NOT pass the compatibility criterion." : "";
      if (!confirm(`Make transformation #${transformation} the active one for upgrade #${upgrade}?${warning}`)) return;
      try {
        await api("POST", `/v1/upgrades/${upgrade}/activate`,
                  { transformation: Number(transformation), force: force === "true" });
        location.reload();
      } catch (err) { alert("Activation failed: " + err.message); }
    });
  });

  document.querySelectorAll("button.cancel").forEach((button) => {
    button.addEventListener("click", async () => {
      if (!confirm(`Cancel job #${button.dataset.job}?`)) return;
      try { await api("POST", `/v1/jobs/${button.dataset.job}/cancel`); button.disabled = true; }
      catch (err) { alert("Cancel failed: " + err.message); }
    });
  });

  const trainForm = document.querySelector("form.train");
  if (trainForm) {
    trainForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const method = trainForm.querySelector("select").value;
      try {
        const job = await api("POST", `/v1/upgrades/${trainForm.dataset.upgrade}/train`, { method });
        const row = jobRow(job.id);
        const table = document.querySelector("#upgrade-jobs");
        (table.tBodies[0] || table).appendChild(row);
        followJob(row, () => setTimeout(() => location.reload(), 1500));
      } catch (err) { alert("Training could not start: " + err.message); }
    });
  }

  const auto = document.querySelector("[data-autorefresh]");
  if (auto) setTimeout(() => location.reload(), Number(auto.dataset.autorefresh) * 1000);
});
