// The dashboard's Nodes view against two example services on one PostgreSQL schema (the server
// at DURABLE_JOBS_PG_URL, default postgres://postgres@127.0.0.1:5432/test): the page served by
// node A lists both nodes and the run node B executes, live; node B is killed with SIGKILL and
// the view drops it once its heartbeat lapses. The schema is the test's own, dropped after it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { launch, startService, screenshots } from "./support.mjs";

const TOKEN = "nodes-test-token";
const PG = process.env.DURABLE_JOBS_PG_URL || "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA = `browser_nodes_${process.pid}_${Date.now().toString(36)}`;
let a, b, browser, page;

function psql(sql) {
  const r = spawnSync("psql", [PG, "-v", "ON_ERROR_STOP=1", "-qc", sql], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`psql failed: ${r.error || r.stderr}`);
}

before(async () => {
  const pg = ["--postgres", PG, "--schema", SCHEMA, "--heartbeat-ms", "250", "--token", TOKEN];
  a = await startService(pg);
  b = await startService(pg);
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1360, height: 700 } });
  page.setDefaultTimeout(20_000);
});

after(async () => {
  await browser?.close();
  await a?.stop();
  await b?.stop();
  psql(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
});

const rows = () => page.$$eval("[data-testid=nodes] tbody tr", (trs) => trs.map((t) => ({
  id: t.dataset.node, self: t.textContent.includes("this node"), cells: [...t.children].map((c) => c.textContent),
})));

test("node A's dashboard lists both nodes and what node B holds", async () => {
  await page.goto(a.url + "/api/dashboard/");
  await page.fill("[data-testid=token]", TOKEN);
  await page.click("[data-testid=sign-in]");
  await page.waitForSelector("[data-nav=nodes]:not([hidden])");
  // A run that takes a while (100 rows of 100 ms), triggered on node B; either node may claim it.
  const res = await fetch(b.url + "/api/trigger", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ jobName: "import-csv", input: { file: "big.csv", rows: 100, rowMs: 100 } }),
  });
  assert.equal(res.status, 200);
  await page.click("[data-nav=nodes]");
  await page.waitForSelector('#app[data-ready="nodes"]');
  let listed = await rows();
  assert.equal(listed.length, 2, JSON.stringify(listed));
  assert.equal(listed.filter((r) => r.self).length, 1);
  // The run is leased by one of them: the view shows it on that node's row (refreshed every 5 s).
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=nodes] tbody tr")]
    .some((t) => t.children[5].textContent === "1"));
  await page.screenshot({ path: `${screenshots}/nodes.png`, fullPage: true });
});

test("a node killed with SIGKILL leaves the view once its heartbeat lapses", async () => {
  const other = (await rows()).find((r) => !r.self);
  b.kill("SIGKILL");
  await page.waitForFunction((id) => {
    const ids = [...document.querySelectorAll("[data-testid=nodes] tbody tr")].map((t) => t.dataset.node);
    return ids.length === 1 && !ids.includes(id);
  }, other.id, { timeout: 20_000 });
});
