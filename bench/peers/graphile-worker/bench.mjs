// Peer benchmark: graphile-worker 0.18.0 on PostgreSQL, burndown of no-op jobs.
//
//   node bench.mjs JOBS CONCURRENCY defaults|batched
//     enqueues JOBS no-op jobs with addJobs (batches of 1,000), then runs a worker pool at
//     CONCURRENCY and waits until every job succeeded. `batched`: localQueue size 500,
//     completeJobBatchDelay 0, failJobBatchDelay 0 (graphile's own benchmark settings).
//
// DURABLE_JOBS_PG_URL (default postgres://postgres@127.0.0.1:5432/test) names the server; the
// run uses a fresh database of its own, dropped afterwards. Prints one JSON line with
// `synchronous_commit` as read from the server.
import { Logger, makeWorkerUtils, run } from 'graphile-worker'
import pg from 'pg'

const [jobs = 50000, conc = 24] = process.argv.slice(2, 4).map(Number)
const mode = process.argv[4] || 'batched'
const base = process.env.DURABLE_JOBS_PG_URL || 'postgres://postgres@127.0.0.1:5432/test'
const dbName = `graphile_peer_${process.pid}_${Date.now()}`
const url = new URL(base); url.pathname = '/' + dbName
const admin = new pg.Client({ connectionString: base })
await admin.connect()
await admin.query(`CREATE DATABASE ${dbName}`)
let code = 0
try {
  const connectionString = url.toString()
  const pool = new pg.Pool({ connectionString, max: conc + 2 })
  pool.on('error', () => {})
  // Quiet: a line per job would cost the peer more than its jobs.
  const logger = new Logger(() => () => {})
  const sync = (await pool.query('SHOW synchronous_commit')).rows[0].synchronous_commit
  const utils = await makeWorkerUtils({ pgPool: pool, logger })
  await utils.migrate()
  const t0 = performance.now()
  for (let i = 0; i < jobs; i += 1000) {
    const n = Math.min(1000, jobs - i)
    await utils.addJobs(Array.from({ length: n }, () => ({ identifier: 'noop', payload: {} })))
  }
  const t1 = performance.now()
  let done = 0
  let resolveAll
  const all = new Promise((r) => { resolveAll = r })
  const worker = mode === 'batched'
    ? { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
    : {}
  const cpu = process.cpuUsage()
  const runner = await run({
    pgPool: pool,
    logger,
    concurrency: conc,
    noHandleSignals: true,
    pollInterval: 1000,
    taskList: { noop: async () => {} },
    preset: { worker },
  })
  runner.events.on('job:success', () => { if (++done === jobs) resolveAll() })
  runner.events.on('job:failed', ({ error }) => { console.error('job failed', error); code = 1; resolveAll() })
  await all
  // A job's success event may come before its completion is committed: the drain ends when
  // the job table is empty.
  const left = async () =>
    Number((await pool.query('SELECT count(*) AS n FROM graphile_worker.jobs')).rows[0].n)
  for (let i = 0; (await left()) !== 0; i++) {
    if (i === 1000) throw new Error('jobs left 10 s after the last success')
    await new Promise((r) => setTimeout(r, 10))
  }
  const t2 = performance.now()
  const used = process.cpuUsage(cpu)
  await runner.stop()
  await utils.release()
  await pool.end()
  console.log(JSON.stringify({
    peer: 'graphile-worker-0.18.0', workload: 'burndown', mode, jobs, concurrency: conc,
    journal_mode: 'postgres', synchronous: sync, synchronous_commit: sync,
    enqueue_per_s: jobs / ((t1 - t0) / 1000),
    drain_per_s: jobs / ((t2 - t1) / 1000),
    cpu_us_total_per_unit: (used.user + used.system) / jobs,
  }))
} catch (e) {
  console.error(e)
  code = 1
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)
  await admin.end()
}
process.exit(code)
