// @coji/durably-react's hooks, unchanged, against the durable-jobs HTTP API in Chromium:
// trigger a job and watch its progress live, list runs live, cancel one.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { buildPage, launch, startService, screenshots } from "./support.mjs";

let service, browser, page;

before(async () => {
  const dir = await buildPage();
  service = await startService(["--open", "--page-dir", dir]);
  browser = await launch();
  page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(service.url + "/app/");
});

after(async () => {
  await browser?.close();
  await service?.stop();
});

test("useJob triggers a run and follows its progress live to its output", async () => {
  await page.fill("[data-testid=rows]", "40");
  await page.click("[data-testid=trigger]");
  // Progress arrives while the run executes: a value strictly between the ends.
  await page.waitForFunction(() => {
    const [n, of] = document.querySelector("[data-testid=progress]").textContent.split("/").map(Number);
    return of === 40 && n > 0 && n < 40;
  });
  assert.equal(await page.textContent("[data-testid=status]"), "leased");
  await page.waitForFunction(() => document.querySelector("[data-testid=status]").textContent === "completed");
  assert.equal(await page.textContent("[data-testid=progress]"), "40/40");
  assert.equal(await page.textContent("[data-testid=output]"), '{"imported":40}');
  const logs = await page.$$eval("[data-testid=logs] li", (li) => li.map((l) => l.textContent));
  // Logs written while the hook listens arrive over the stream (as in durably, earlier ones are
  // not replayed to a new subscriber).
  assert.ok(logs.includes("imported 40 rows with columns id,name,email"), logs.join("|"));
});

test("useRuns lists runs and updates them live; useRunActions cancels one", async () => {
  const firstId = await page.textContent("[data-testid=run-id]");
  await page.waitForSelector(`[data-run="${firstId}"][data-status=completed]`);
  // A long run: 400 rows of 25 ms.
  await page.fill("[data-testid=rows]", "400");
  await page.click("[data-testid=trigger]");
  await page.waitForFunction((first) => {
    const id = document.querySelector("[data-testid=run-id]").textContent;
    return id && id !== first;
  }, firstId);
  const id = await page.textContent("[data-testid=run-id]");
  // The list shows it leased without a reload, and its progress moves in place.
  const row = `[data-run="${id}"]`;
  await page.waitForSelector(`${row}[data-status=leased]`);
  await page.waitForFunction((sel) => {
    const t = document.querySelector(sel + " .progress")?.textContent || "";
    const n = Number(t.split("/")[0]);
    return n > 0;
  }, row);
  await page.screenshot({ path: `${screenshots}/durably-react.png` });
  await page.click(`${row} button.cancel`);
  await page.waitForSelector(`${row}[data-status=cancelled]`);
  await page.waitForFunction(() => document.querySelector("[data-testid=status]").textContent === "cancelled");
  assert.equal(await page.textContent("[data-testid=error]"), "");
  const rows = await page.$$eval("[data-testid=runs] tr", (trs) => trs.map((t) => t.dataset.status));
  assert.deepEqual(rows.slice(0, 2), ["cancelled", "completed"]);
});
