// Peer benchmark: @coji/durably 0.15.0 on PostgreSQL (kysely PostgresDialect over a pg Pool).
//
//   node bench.mjs steps RUNS STEPS CONCURRENCY POLL_MS
//     batch-triggers RUNS runs (batches of 500) of a job with STEPS trivial steps, then starts
//     the worker and waits until every run completed (as bench/peers/durably/bench.mjs).
//
// DURABLE_JOBS_PG_URL (default postgres://postgres@127.0.0.1:5432/test) names the server; the
// run uses a fresh database of its own, dropped afterwards. Prints one JSON line with
// `synchronous_commit` as read from the server.
import { createDurably, defineJob } from '@coji/durably'
import { PostgresDialect } from 'kysely'
import pg from 'pg'
import { z } from 'zod'

const [, ...rest] = process.argv.slice(2)
const [runs = 1000, nsteps = 3, conc = 8, poll = 10] = rest.map(Number)
const base = process.env.DURABLE_JOBS_PG_URL || 'postgres://postgres@127.0.0.1:5432/test'
const dbName = `durably_peer_${process.pid}_${Date.now()}`
const url = new URL(base); url.pathname = '/' + dbName
const admin = new pg.Client({ connectionString: base })
await admin.connect()
await admin.query(`CREATE DATABASE ${dbName}`)
let code = 0
try {
  const pool = new pg.Pool({ connectionString: url.toString(), max: 10 })
  pool.on('error', () => {})
  const sync = (await pool.query('SHOW synchronous_commit')).rows[0].synchronous_commit
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
    dialect: new PostgresDialect({ pool }),
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
  await pool.end()
  const drain = (t2 - t1) / 1000
  console.log(JSON.stringify({
    peer: 'durably-0.15.0-postgres', workload: 'steps', runs, steps: nsteps, concurrency: conc,
    poll_ms: poll, journal_mode: 'postgres', synchronous: sync, synchronous_commit: sync,
    trigger_per_s: runs / ((t1 - t0) / 1000),
    drain_runs_per_s: runs / drain,
    drain_steps_per_s: (runs * nsteps) / drain,
    cpu_us_total_per_unit: (used.user + used.system) / runs,
  }))
} catch (e) {
  console.error(e)
  code = 1
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
  await admin.end()
}
process.exit(code)
