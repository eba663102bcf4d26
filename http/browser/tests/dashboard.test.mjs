// The operator dashboard in Chromium against the example service with seed data: sign in, read
// the overview, filter runs, open a failed run and retry it, terminate an instance, count and
// apply a bulk action, see that one process has no Nodes view; a screenshot of each page.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { launch, startService, screenshots } from "./support.mjs";

const TOKEN = "dashboard-test-token";
let service, browser, page;

const shot = (name) => page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
const ready = (section) => page.waitForSelector(`#app[data-ready="${section}"]`);

before(async () => {
  service = await startService(["--token", TOKEN, "--seed"]);
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
  page.setDefaultTimeout(20_000);
});

after(async () => {
  await browser?.close();
  await service?.stop();
});

test("sign in with a token, then the overview counts runs and instances per job", async () => {
  await page.goto(service.url + "/api/dashboard/");
  await page.fill("[data-testid=token]", TOKEN);
  await page.click("[data-testid=sign-in]");
  // The seeded imports end within a second: two complete, two fail once.
  await page.waitForFunction(() => {
    const row = document.querySelector('[data-testid=overview-runs] tr[data-job="import-csv"]');
    return row && row.children[4].textContent === "2" && row.children[3].textContent === "2";
  });
  await ready("overview");
  assert.equal(await page.textContent("[data-testid=tile-jobs] .n"), "5");
  assert.equal(await page.textContent("[data-testid=tile-failed] .n"), "2");
  const refresher = await page.$$eval('[data-testid=overview-instances] tr[data-job="token_refresher"] td', (td) => td.map((t) => t.textContent));
  assert.deepEqual(refresher.slice(0, 5), ["continuous", "token_refresher", "3", "3", "1"]);
  await shot("overview");
});

test("runs are filtered by status, and a failed run is opened and retried", async () => {
  await page.click("[data-nav=runs]");
  await ready("runs");
  assert.equal(await page.locator("[data-testid=run-row]").count(), 4);
  await page.selectOption("[data-testid=filter-status]", "failed");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=run-row]").length === 2);
  const statuses = await page.$$eval("[data-testid=run-row] [data-status]", (b) => b.map((x) => x.dataset.status));
  assert.deepEqual(statuses, ["failed", "failed"]);
  assert.match(page.url(), /#\/runs\?status=failed/);
  await shot("runs");

  const failedId = await page.getAttribute("[data-testid=run-row]:first-child", "data-run");
  await page.click(`[data-run="${failedId}"] a`);
  await ready("run");
  assert.match(await page.textContent("[data-testid=run-error]"), /invalid email/);
  const timeline = await page.$$eval("[data-testid=timeline] li", (li) => li.map((l) => l.textContent));
  assert.ok(timeline[0].startsWith("Created") && timeline.at(-1).startsWith("Failed"), timeline.join("|"));
  assert.ok(timeline.some((t) => t.includes("“validate” failed")), timeline.join("|"));
  await shot("run-failed");

  await page.click("[data-testid=retrigger]");
  await page.waitForFunction((old) => location.hash.startsWith("#/run/") && !location.hash.endsWith(old), failedId);
  await ready("run");
  // The retry runs live on this page until it completes.
  await page.waitForSelector('[data-testid=run-status] [data-status="completed"]');
  const output = await page.textContent("pre.json >> nth=1");
  assert.match(output, /"imported"/);
  await shot("run-retried");
});

test("an instance is inspected and terminated", async () => {
  await page.click("[data-nav=instances]");
  await ready("instances");
  await page.selectOption("[data-testid=filter-status]", "retrying");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=instance-row]").length === 1);
  assert.match(await page.textContent("[data-testid=instance-row]"), /identity provider answered 503/);
  await page.selectOption("[data-testid=filter-status]", "");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=instance-row]").length === 6);
  await shot("instances");

  await page.click('[data-instance="token_refresher/user-3"] a');
  await ready("instance");
  assert.match(await page.textContent("[data-testid=state]"), /"broken": true/);
  assert.notEqual(await page.textContent("[data-testid=next-alarm]"), "–");
  await shot("instance");
  await page.click("[data-testid=terminate]");
  await page.click("[data-testid=confirm-ok]");
  await page.waitForSelector("[data-testid=gone]");

  await page.click("[data-nav=schedules]");
  await ready("schedules");
  const schedules = await page.$$eval("[data-testid=schedules] tbody tr", (trs) => trs.map((t) => t.textContent));
  assert.equal(schedules.length, 2);
  assert.ok(schedules.some((s) => s.includes("30 4 * * *") && s.includes("Europe/Paris")), schedules.join("|"));
  await shot("schedules");
});

test("a bulk action counts first and acts after confirmation", async () => {
  await page.click("[data-nav=bulk]");
  await ready("bulk");
  await page.selectOption("[data-testid=bulk-action]", "delete");
  await page.selectOption("[data-testid=bulk-status]", "failed");
  await page.click("[data-testid=bulk-count]");
  await page.waitForSelector("[data-testid=bulk-count-text]");
  assert.equal(await page.textContent("[data-testid=bulk-count-text]"), "2 runs match; delete applies to 2 of them.");
  await shot("bulk");
  await page.click("[data-testid=bulk-apply]");
  await page.click("[data-testid=confirm-ok]");
  await page.waitForSelector("[data-testid=bulk-done]");
  assert.equal(await page.textContent("[data-testid=bulk-done]"), "delete: 2 done, 0 failed.");
  await page.click("[data-nav=runs]");
  await ready("runs");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=run-row] [data-status=failed]").length === 0);
});

test("one process has no Nodes link, and its Nodes page says so", async () => {
  // The link is shown only for a shared feed; by now the dashboard asked.
  await page.waitForFunction(() => document.querySelector("[data-nav=nodes]").hidden);
  await page.goto(service.url + "/api/dashboard/#/nodes");
  await ready("nodes");
  assert.equal(await page.textContent("[data-testid=single-process]"), "Single process: this engine runs alone on its store.");
  assert.equal(await page.isHidden("[data-nav=nodes]"), true);
});
