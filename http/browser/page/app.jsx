// A page built with @coji/durably-react's hooks, unchanged, talking to the durable-jobs HTTP
// API: trigger a job and watch it live (useJob), list runs live (useRuns), cancel one
// (useRunActions).
import React, { useState } from "react";
import { createRoot } from "react-dom/client";
import { useJob, useRuns, useRunActions } from "@coji/durably-react";

const api = "/api";

function Trigger() {
  const job = useJob({ api, jobName: "import-csv", autoResume: false });
  const [rows, setRows] = useState(40);
  return (
    <section>
      <h2>Import</h2>
      <input data-testid="rows" type="number" value={rows} onChange={(e) => setRows(Number(e.target.value))} />
      <button data-testid="trigger" onClick={() => job.trigger({ file: "contacts.csv", rows, rowMs: 25 })}>Import</button>
      <p>run <span data-testid="run-id">{job.currentRunId ?? ""}</span></p>
      <p>status <span data-testid="status">{job.status ?? "idle"}</span></p>
      <p>progress <span data-testid="progress">{job.progress ? `${job.progress.current}/${job.progress.total}` : ""}</span></p>
      <p>output <span data-testid="output">{job.output ? JSON.stringify(job.output) : ""}</span></p>
      <ul data-testid="logs">{job.logs.map((l) => <li key={l.id}>{l.message}</li>)}</ul>
    </section>
  );
}

function Runs() {
  const { runs, isLoading } = useRuns({ api, jobName: "import-csv", pageSize: 10 });
  const { cancel } = useRunActions({ api });
  const [error, setError] = useState("");
  return (
    <section>
      <h2>Runs</h2>
      <p data-testid="runs-loading">{isLoading ? "loading" : "loaded"}</p>
      <table>
        <tbody data-testid="runs">
          {runs.map((r) => (
            <tr key={r.id} data-run={r.id} data-status={r.status}>
              <td>{r.id}</td>
              <td className="status">{r.status}</td>
              <td className="progress">{r.progress ? `${r.progress.current}/${r.progress.total}` : ""}</td>
              <td>{r.isActive ? <button className="cancel" onClick={() => cancel(r.id).catch((e) => setError(e.message))}>Cancel</button> : null}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p data-testid="error">{error}</p>
    </section>
  );
}

createRoot(document.getElementById("root")).render(<><Trigger /><Runs /></>);
