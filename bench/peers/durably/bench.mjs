// Peer benchmark: @coji/durably 0.15.0 on better-sqlite3 (a database file in WAL mode).
//
//   node bench.mjs steps RUNS STEPS CONCURRENCY POLL_MS
//     batch-triggers RUNS runs (batches of 500) of a job with STEPS trivial steps, then starts
//     the worker and waits until every run completed.
//   node bench.mjs latency N POLL_MS|default
//     on an idle, started instance, calls `triggerAndWait` of a one-step job N times in sequence.
//
// SYNC=NORMAL|FULL sets PRAGMA synchronous. Prints one JSON line.
import { createDurably, defineJob } from '@coji/durably'
import Database from 'better-sqlite3'
import { SqliteDialect } from 'kysely'
import { z } from 'zod'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const [mode = 'steps', ...rest] = process.argv.slice(2)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-peer-'))
const file = path.join(dir, 'bench.db')
const db = new Database(file)
db.pragma('journal_mode = WAL')
const sync = process.env.SYNC || 'NORMAL'
db.pragma('synchronous = ' + sync)

// What the connection durably used runs with, read from it (not the values asked for).
function durability() {
  const levels = ['OFF', 'NORMAL', 'FULL', 'EXTRA']
  const level = db.pragma('synchronous', { simple: true })
  return {
    journal_mode: String(db.pragma('journal_mode', { simple: true })).toLowerCase(),
    synchronous: levels[level] ?? String(level),
  }
}

function cleanup() {
  try { db.close() } catch {}
  fs.rmSync(dir, { recursive: true, force: true })
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

async function steps() {
  const [runs = 20000, nsteps = 3, conc = 8, poll = 10] = rest.map(Number)
  const job = defineJob({
    name: 'bench',
    input: z.object({ i: z.number() }),
    output: z.object({ sum: z.number() }),
    run: async (step, input) => {
      let sum = 0
      for (let s = 0; s < nsteps; s++) sum += await step.run(`s${s}`, async () => input.i + s)
      return { sum }
    },
  })
  const durably = createDurably({
    dialect: new SqliteDialect({ database: db }),
    pollingIntervalMs: poll,
    maxConcurrentRuns: conc,
    jobs: { bench: job },
  })
  await durably.migrate()
  let done = 0
  const finished = new Promise((resolve, reject) => {
    durably.on('run:complete', () => { if (++done === runs) resolve() })
    durably.on('run:fail', (e) => reject(new Error('run failed: ' + e.error)))
  })
  const inputs = Array.from({ length: runs }, (_, i) => ({ i }))
  const t0 = performance.now()
  for (let i = 0; i < runs; i += 500) await durably.jobs.bench.batchTrigger(inputs.slice(i, i + 500))
  const t1 = performance.now()
  const cpu = process.cpuUsage()
  durably.start()
  await finished
  const t2 = performance.now()
  const used = process.cpuUsage(cpu)
  await durably.stop()
  const drain = (t2 - t1) / 1000
  return {
    peer: 'durably-0.15.0', workload: 'steps', sync, runs, steps: nsteps, concurrency: conc, poll_ms: poll,
    ...durability(),
    trigger_per_s: runs / ((t1 - t0) / 1000),
    drain_runs_per_s: runs / drain,
    drain_steps_per_s: (runs * nsteps) / drain,
    // CPU time of the whole process (user and system) per run during the drain.
    cpu_us_total_per_unit: (used.user + used.system) / runs,
  }
}

async function latency() {
  const n = Number(rest[0] ?? 1000)
  const poll = rest[1] === undefined || rest[1] === 'default' ? undefined : Number(rest[1])
  const job = defineJob({
    name: 'one',
    input: z.object({ i: z.number() }),
    output: z.object({ v: z.number() }),
    run: async (step, input) => ({ v: await step.run('only', async () => input.i + 1) }),
  })
  const options = { dialect: new SqliteDialect({ database: db }), jobs: { one: job } }
  if (poll !== undefined) options.pollingIntervalMs = poll
  const durably = createDurably(options)
  await durably.migrate()
  durably.start()
  // One warm-up call, not measured (JIT, first prepared statements).
  await durably.jobs.one.triggerAndWait({ i: -1 })
  const samples = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    const r = await durably.jobs.one.triggerAndWait({ i })
    samples.push(performance.now() - t)
    if (r.output.v !== i + 1) throw new Error('wrong output')
  }
  await durably.stop()
  samples.sort((a, b) => a - b)
  return {
    peer: 'durably-0.15.0', workload: 'latency', sync, n, poll_ms: poll ?? 'default',
    ...durability(),
    p50_ms: percentile(samples, 50), p99_ms: percentile(samples, 99),
  }
}

try {
  const result = mode === 'latency' ? await latency() : await steps()
  console.log(JSON.stringify(result))
  cleanup()
  process.exit(0)
} catch (e) {
  console.error(e)
  cleanup()
  process.exit(1)
}
