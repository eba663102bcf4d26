//! The parent's ledger: every line the kill harness's children printed, in order, and the
//! checks of what they acknowledged against what the database holds after the drain.
//!
//! The rules, from `docs/jobs.md`:
//! - An acknowledged operation took effect exactly once: a step trigger has one run per
//!   idempotency key, which ends `completed` (or `failed` when it was meant to); an `add` with an
//!   event id is in exactly one committed flush; a `send` with an event id is in its task's state
//!   exactly once, and a refused one is not.
//! - No completed step runs again: once `step.run` returned a step's output (the child printed
//!   `step-done`), that step's body is never entered again.
//! - At-least-once re-runs happen only for work whose commit was not acknowledged: an execution
//!   that runs a second time (the same step, the same flushed event, the same continuous run and
//!   attempt, the same task execution) must have run first in an incarnation that was killed,
//!   as the last execution of its instance there (a later execution of the same instance in the
//!   same process proves the earlier one committed, since one instance runs one at a time).
//! - Nothing is stuck: after the drain no run is pending or leased, no batch is left, no task
//!   schedule is pending, and every ticker still has its next run.
//!
//! Power cuts (`tests/powercut.rs`) add two things. The ledger is told, after each cut, which
//! acknowledged effects the disk lost ([`cut`]); those are exempt from the rules above, and a
//! completed step whose output was lost may run again. And with `synchronous = NORMAL` a cut
//! may undo commits of every incarnation since the previous cut (the log is not synced at each
//! commit): executions there may run again even when a later execution of their instance
//! followed (the ledger is told which incarnations a cut [`undid`](Ledger::record_cut)).

pub mod cut;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use durable_jobs::steps::RunStatus;

use super::{TaskLedger, Ticks, STEPS};

/// A position in the ledger: the incarnation and the line within it.
pub type At = (usize, usize);

/// Every line of every incarnation, and how it ended.
#[derive(Default)]
pub struct Ledger {
    incarnations: Vec<Incarnation>,
    /// The first incarnation after the last power cut.
    since_cut: usize,
}

/// The lines of one child process, and how it ended.
struct Incarnation {
    lines: Vec<String>,
    /// When each line was printed, for lines a child stamped (see [`Ledger::record`]).
    stamps: Vec<Option<u128>>,
    killed: bool,
    /// A power cut may have undone any of its commits (with `synchronous = NORMAL`).
    undone: bool,
    /// Its database connections were broken while it ran: a commit of it may have got no
    /// answer (and be made again), though none that was answered may be lost.
    disturbed: bool,
}

/// A ledger run as stored: its id, operation, status and output.
pub type StoredRun = (String, String, RunStatus, Option<Vec<String>>);

/// What the database holds after the drain, read by an engine that runs nothing.
#[derive(Default, Debug)]
pub struct Final {
    /// Every ledger run.
    pub runs: Vec<StoredRun>,
    /// Batches still stored: their ids.
    pub batches_left: Vec<String>,
    /// Each task: its state, its stored execute count and whether a schedule is pending.
    pub tasks: BTreeMap<String, (Option<TaskLedger>, u64, bool)>,
    /// Each ticker: its state and whether it has a next run.
    pub tickers: BTreeMap<String, (Option<Ticks>, bool)>,
}

/// What the checks counted.
#[derive(Default, Debug, Clone, Copy)]
pub struct Tally {
    /// Incarnations killed with `SIGKILL`.
    pub kills: usize,
    /// Acknowledged operations checked against the database.
    pub acknowledged: usize,
    /// Step bodies entered again after a kill (their step had not been acknowledged).
    pub step_reruns: usize,
    /// Events delivered again by a flush whose commit a kill prevented.
    pub flush_redeliveries: usize,
    /// Continuous runs executed again after a kill.
    pub continuous_reruns: usize,
    /// Task executions run again after a kill.
    pub task_reruns: usize,
    /// Operations in flight at a kill, issued again by the next incarnation.
    pub resent: usize,
    /// Acknowledged effects a power cut undid (only `synchronous = NORMAL` may lose any).
    pub lost_to_cuts: usize,
}

impl Ledger {
    /// Adds the lines of one incarnation.
    ///
    /// A line may begin with `@<nanoseconds since the epoch> `, the time it was printed: the
    /// children of the multi-process test, which run at the same time, stamp theirs, and the
    /// ledger then reads the lines of every incarnation in the order of their stamps (lines
    /// without one after every stamped line, in the order recorded). Without stamps it reads
    /// them incarnation after incarnation.
    pub fn record(&mut self, lines: Vec<String>, killed: bool) {
        self.record_life(lines, killed, false);
    }

    /// As [`record`](Self::record), for a child whose database connections were broken while
    /// it ran (`disturbed`): like a kill, that may leave a commit without an answer, so its
    /// executions may run again; nothing it acknowledged may be lost all the same.
    pub fn record_life(&mut self, lines: Vec<String>, killed: bool, disturbed: bool) {
        let (stamps, lines) = lines
            .into_iter()
            .map(
                |line| match line.strip_prefix('@').and_then(|l| l.split_once(' ')) {
                    Some((stamp, rest)) if stamp.parse::<u128>().is_ok() => {
                        (stamp.parse().ok(), rest.to_owned())
                    }
                    _ => (None, line),
                },
            )
            .unzip();
        self.incarnations.push(Incarnation {
            lines,
            stamps,
            killed,
            undone: false,
            disturbed,
        });
    }

    /// Records a power cut at the end of the last incarnation: `audit` says which acknowledged
    /// effects the disk lost (a line `lost ...` each, appended to that incarnation), and
    /// `undone` whether the cut may have undone commits of every incarnation since the previous
    /// cut (with `synchronous = NORMAL`; with `FULL` only the unacknowledged last commits).
    pub fn record_cut(&mut self, audit: &cut::Audit, undone: bool) {
        let since = self.since_cut;
        self.since_cut = self.incarnations.len();
        let Some(last) = self.incarnations.last_mut() else {
            return;
        };
        last.lines
            .extend(audit.lost.iter().map(cut::Effect::lost_line));
        last.stamps.resize(last.lines.len(), None);
        if undone {
            for incarnation in &mut self.incarnations[since..] {
                incarnation.undone = true;
            }
        }
    }

    fn lines(&self) -> impl Iterator<Item = (At, Vec<&str>)> {
        let mut order: Vec<(u128, At)> = self
            .incarnations
            .iter()
            .enumerate()
            .flat_map(|(i, inc)| {
                inc.stamps
                    .iter()
                    .enumerate()
                    .map(move |(j, stamp)| (stamp.unwrap_or(u128::MAX), (i, j)))
            })
            .collect();
        // Stable: unstamped lines keep the order they were recorded in.
        order.sort_by_key(|(stamp, _)| *stamp);
        order.into_iter().map(move |(_, (i, j))| {
            let line = &self.incarnations[i].lines[j];
            ((i, j), line.split(' ').collect())
        })
    }

    /// Whether a commit of `incarnation` may have been left without an answer: it was killed,
    /// or its connections were broken.
    fn killed(&self, incarnation: usize) -> bool {
        let incarnation = &self.incarnations[incarnation];
        incarnation.killed || incarnation.disturbed
    }

    /// Whether the execution printed at `at`, of instance `inst`, may be one whose commit never
    /// reached the disk, so that it may run again: it was the last of its instance in an
    /// incarnation that was killed, or a power cut undid its incarnation's commits.
    fn maybe_uncommitted(
        &self,
        at: At,
        inst: &str,
        last: &HashMap<(usize, String), usize>,
    ) -> bool {
        let (i, j) = at;
        (self.killed(i) && last.get(&(i, inst.to_owned())) == Some(&j))
            || self.incarnations[i].undone
            || self.incarnations[i].disturbed
    }

    /// Operations issued and never answered: the next incarnation issues them again, with the
    /// same idempotency keys and event ids, so each ends with an answer.
    pub fn resends(&self) -> String {
        let mut issued: BTreeMap<String, String> = BTreeMap::new();
        for (_, w) in self.lines() {
            match w.as_slice() {
                ["issue", "step", op, fail] => {
                    issued.insert(format!("step {op}"), format!("step {op} {fail}"));
                }
                ["issue", "add", n] => {
                    issued.insert(format!("add {n}"), format!("add {n}"));
                }
                ["issue", "send", inst, op, sched, fail] => {
                    issued.insert(
                        format!("send {op}"),
                        format!("send {inst} {op} {sched} {fail}"),
                    );
                }
                ["ack", "step", op, ..] => {
                    issued.remove(&format!("step {op}"));
                }
                ["ack" | "dup", "add", n, ..] => {
                    issued.remove(&format!("add {n}"));
                }
                ["ack" | "dup" | "refused", "send", op] => {
                    issued.remove(&format!("send {op}"));
                }
                _ => {}
            }
        }
        issued.into_values().map(|l| l + "\n").collect()
    }

    /// Checks every rule of the module docs; returns the counts, or every violation found.
    pub fn check(&self, db: &Final) -> Result<Tally, String> {
        let mut errors = String::new();
        let mut tally = Tally {
            kills: self.incarnations.iter().filter(|inc| inc.killed).count(),
            ..Tally::default()
        };
        let mut fail = |e: String| {
            if errors.len() < 20_000 {
                let _ = writeln!(errors, "{e}");
            }
        };
        for ((i, j), w) in self.lines() {
            if w.first() == Some(&"unexpected") {
                fail(format!("incarnation {i} line {j}: {}", w.join(" ")));
            }
        }
        self.check_steps(db, &mut tally, &mut fail);
        self.check_batches(db, &mut tally, &mut fail);
        self.check_tasks(db, &mut tally, &mut fail);
        self.check_tickers(db, &mut tally, &mut fail);
        tally.resent = self.resent_count();
        if errors.is_empty() {
            Ok(tally)
        } else {
            Err(errors)
        }
    }

    fn resent_count(&self) -> usize {
        let mut seen = HashSet::new();
        let mut again = 0;
        for (_, w) in self.lines() {
            if let ["issue", kind, rest @ ..] = w.as_slice() {
                let key = match *kind {
                    "send" => format!("send {}", rest.get(1).unwrap_or(&"")),
                    _ => format!("{kind} {}", rest.first().unwrap_or(&"")),
                };
                if !seen.insert(key) {
                    again += 1;
                }
            }
        }
        again
    }

    /// The last line of each instance's executions in each incarnation, per `instance_of`.
    fn last_execution(
        &self,
        instance_of: impl Fn(&[&str]) -> Option<String>,
    ) -> HashMap<(usize, String), usize> {
        let mut last = HashMap::new();
        for ((i, j), w) in self.lines() {
            if let Some(inst) = instance_of(&w) {
                last.insert((i, inst), j);
            }
        }
        last
    }

    fn check_steps(&self, db: &Final, tally: &mut Tally, fail: &mut impl FnMut(String)) {
        let mut planned: HashMap<String, u8> = HashMap::new();
        let mut acked: HashMap<String, String> = HashMap::new();
        // Per (op, step): done, and whether the last entry ended in a persisted failure.
        let mut done: HashSet<(String, String)> = HashSet::new();
        let mut open: HashMap<(String, String), usize> = HashMap::new();
        let mut lost: HashSet<String> = HashSet::new();
        for ((i, _), w) in self.lines() {
            match w.as_slice() {
                ["lost", "run", op] => {
                    tally.lost_to_cuts += 1;
                    lost.insert((*op).to_owned());
                }
                ["lost", "step", op, step] => {
                    // Its output is gone: it runs again, at least once more.
                    tally.lost_to_cuts += 1;
                    done.remove(&((*op).to_owned(), (*step).to_owned()));
                }
                ["issue", "step", op, f] => {
                    planned.insert((*op).to_owned(), f.parse().unwrap_or(0));
                }
                ["ack", "step", op, run, how] => {
                    tally.acknowledged += 1;
                    if let Some(before) = acked.insert((*op).to_owned(), (*run).to_owned()) {
                        if before != *run {
                            fail(format!(
                                "step {op}: acknowledged as run {before} and as {run}"
                            ));
                        }
                        if *how != "idempotent" {
                            fail(format!("step {op}: a repeated trigger answered {how}"));
                        }
                    }
                }
                ["step-enter", op, step, _] => {
                    let key = ((*op).to_owned(), (*step).to_owned());
                    if done.contains(&key) {
                        fail(format!("step {step} of {op} ran again after it completed"));
                    }
                    if let Some(prev) = open.insert(key, i) {
                        // Entered before without a persisted failure: only a kill explains
                        // it, or broken connections (a persist that got no answer), which may
                        // also make the same process enter it again.
                        let same_life = prev == i && !self.incarnations[i].disturbed;
                        if same_life || !self.killed(prev) {
                            fail(format!(
                                "step {step} of {op} entered twice in incarnation {i} without a kill"
                            ));
                        }
                        tally.step_reruns += 1;
                    }
                }
                ["step-fail", op, step, _] => {
                    open.remove(&((*op).to_owned(), (*step).to_owned()));
                }
                ["step-done", op, step] => {
                    let key = ((*op).to_owned(), (*step).to_owned());
                    open.remove(&key);
                    done.insert(key);
                }
                _ => {}
            }
        }
        let mut runs_of: HashMap<&str, Vec<&StoredRun>> = HashMap::new();
        for run in &db.runs {
            runs_of.entry(run.1.as_str()).or_default().push(run);
        }
        for (op, plan) in &planned {
            if lost.contains(op) {
                if runs_of.contains_key(op.as_str()) {
                    fail(format!(
                        "step {op}: its run was lost at a power cut, yet it is stored"
                    ));
                }
                continue;
            }
            let Some(run_id) = acked.get(op) else {
                fail(format!(
                    "step {op} was never acknowledged, even after the drain"
                ));
                continue;
            };
            match runs_of.get(op.as_str()).map(Vec::as_slice) {
                Some([(id, _, status, output)]) => {
                    if id != run_id {
                        fail(format!("step {op}: acknowledged run {run_id}, stored {id}"));
                    }
                    let expected = if *plan == 2 {
                        RunStatus::Failed
                    } else {
                        RunStatus::Completed
                    };
                    if *status != expected {
                        fail(format!(
                            "step {op}: run {id} is {status:?}, not {expected:?}"
                        ));
                    }
                    if expected == RunStatus::Completed {
                        if output.as_deref() != Some(&STEPS.map(str::to_owned)[..]) {
                            fail(format!("step {op}: run {id} output {output:?}"));
                        }
                        for step in STEPS {
                            if !done.contains(&(op.clone(), step.to_owned())) {
                                fail(format!("step {op}: completed without {step} done"));
                            }
                        }
                    }
                }
                other => fail(format!("step {op}: stored runs {other:?}, not one")),
            }
        }
        for run in &db.runs {
            if !planned.contains_key(&run.1) {
                fail(format!("run {} of op {} was never issued", run.0, run.1));
            }
        }
    }

    fn check_batches(&self, db: &Final, tally: &mut Tally, fail: &mut impl FnMut(String)) {
        if !db.batches_left.is_empty() {
            fail(format!(
                "batches left after the drain: {:?}",
                db.batches_left
            ));
        }
        let last = self.last_execution(|w| match w {
            ["flush", inst, ..] => Some((*inst).to_owned()),
            _ => None,
        });
        // Where each number was first issued. Read first: the flush of a number may come
        // before its issue in the order of the lines when the clocks of two processes that
        // shared the file disagree by a hair.
        let mut issued: HashMap<u64, usize> = HashMap::new();
        for ((i, _), w) in self.lines() {
            if let ["issue", "add", n] = w.as_slice() {
                issued.entry(n.parse().unwrap_or(u64::MAX)).or_insert(i);
            }
        }
        let mut answered: HashSet<u64> = HashSet::new();
        let mut deliveries: HashMap<u64, Vec<(At, String)>> = HashMap::new();
        let mut lost: HashSet<u64> = HashSet::new();
        for ((i, j), w) in self.lines() {
            match w.as_slice() {
                ["lost", "event", id] if id.starts_with('e') => {
                    tally.lost_to_cuts += 1;
                    lost.insert(id[1..].parse().unwrap_or(u64::MAX));
                }
                ["ack", "add", n, _] => {
                    tally.acknowledged += 1;
                    answered.insert(n.parse().unwrap_or(u64::MAX));
                }
                ["dup", "add", n] => {
                    tally.acknowledged += 1;
                    let n: u64 = n.parse().unwrap_or(u64::MAX);
                    // A duplicate answers only an add issued again after a kill.
                    if issued.get(&n) == Some(&i) {
                        fail(format!("add {n} refused as a duplicate at its first issue"));
                    }
                    answered.insert(n);
                }
                ["flush", inst, _, "ok", list] => {
                    let mut in_batch = HashSet::new();
                    for n in list.split(',').filter(|s| !s.is_empty()) {
                        let n: u64 = n.parse().unwrap_or(u64::MAX);
                        if !in_batch.insert(n) {
                            fail(format!("flush of {inst} holds {n} twice: {list}"));
                        }
                        if !issued.contains_key(&n) {
                            fail(format!("flush of {inst} holds {n}, never issued"));
                        }
                        deliveries
                            .entry(n)
                            .or_default()
                            .push(((i, j), (*inst).to_owned()));
                    }
                }
                _ => {}
            }
        }
        for n in issued.keys() {
            if lost.contains(n) {
                // Lost with its event id: any delivery of it was undone with it.
                continue;
            }
            if !answered.contains(n) {
                fail(format!("add {n} was never answered, even after the drain"));
            }
            let Some(ds) = deliveries.get(n) else {
                fail(format!("add {n} acknowledged but never delivered"));
                continue;
            };
            // Every delivery but the last must be one whose commit a kill may have prevented.
            for ((i, j), inst) in &ds[..ds.len() - 1] {
                if self.maybe_uncommitted((*i, *j), inst, &last) {
                    tally.flush_redeliveries += 1;
                } else {
                    fail(format!(
                        "add {n} delivered again after a committed flush (incarnation {i}, line {j})"
                    ));
                }
            }
        }
    }

    fn check_tasks(&self, db: &Final, tally: &mut Tally, fail: &mut impl FnMut(String)) {
        let mut planned: HashMap<String, (String, bool)> = HashMap::new();
        let mut outcome: HashMap<String, &str> = HashMap::new();
        let mut first_issue: HashMap<String, usize> = HashMap::new();
        let last = self.last_execution(|w| match w {
            ["task-exec", inst, _] => Some((*inst).to_owned()),
            _ => None,
        });
        let mut execs: HashMap<(String, String), At> = HashMap::new();
        let mut lost: HashSet<String> = HashSet::new();
        for ((i, j), w) in self.lines() {
            match w.as_slice() {
                ["lost", "event", op] if !op.starts_with('e') => {
                    tally.lost_to_cuts += 1;
                    lost.insert((*op).to_owned());
                }
                ["issue", "send", inst, op, _, f] => {
                    planned.insert((*op).to_owned(), ((*inst).to_owned(), *f == "true"));
                    first_issue.entry((*op).to_owned()).or_insert(i);
                }
                [how @ ("ack" | "dup" | "refused"), "send", op] => {
                    tally.acknowledged += 1;
                    let refused = planned.get(*op).is_some_and(|p| p.1);
                    if (*how == "refused") != refused {
                        fail(format!("send {op} answered {how}"));
                    }
                    if *how == "dup" && first_issue.get(*op) == Some(&i) {
                        fail(format!(
                            "send {op} refused as a duplicate at its first issue"
                        ));
                    }
                    outcome.insert((*op).to_owned(), how);
                }
                ["ack", "ttrigger", _] | ["notfound", "ttrigger", _] => tally.acknowledged += 1,
                ["task-exec", inst, count] => {
                    let key = ((*inst).to_owned(), (*count).to_owned());
                    if let Some((pi, pj)) = execs.insert(key, (i, j)) {
                        if self.maybe_uncommitted((pi, pj), inst, &last) {
                            tally.task_reruns += 1;
                        } else {
                            fail(format!(
                                "task {inst} execution {count} ran again after it committed"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut accepted: HashMap<&str, usize> = HashMap::new();
        for (inst, (state, execute_count, scheduled)) in &db.tasks {
            if *scheduled {
                fail(format!("task {inst} still has a schedule after the drain"));
            }
            let Some(state) = state else { continue };
            if state.executed != *execute_count {
                fail(format!(
                    "task {inst}: its state counts {} executions, its row {execute_count}",
                    state.executed
                ));
            }
            for op in &state.ops {
                *accepted.entry(op.as_str()).or_default() += 1;
                if planned.get(op).map(|p| p.0.as_str()) != Some(inst.as_str()) {
                    fail(format!("task {inst} holds {op}, not sent to it"));
                }
            }
        }
        for (op, (_, refused)) in &planned {
            let times = accepted.get(op.as_str()).copied().unwrap_or(0);
            match outcome.get(op) {
                None => fail(format!(
                    "send {op} was never answered, even after the drain"
                )),
                Some(_) if lost.contains(op) && times != 0 => fail(format!(
                    "send {op} was lost at a power cut, yet it is in the state {times} times"
                )),
                Some(_) if lost.contains(op) => {}
                Some(_) if *refused && times != 0 => {
                    fail(format!("refused send {op} is in the state {times} times"))
                }
                Some(_) if !*refused && times != 1 => fail(format!(
                    "acknowledged send {op} is in the state {times} times"
                )),
                Some(_) => {}
            }
        }
    }

    fn check_tickers(&self, db: &Final, tally: &mut Tally, fail: &mut impl FnMut(String)) {
        let last = self.last_execution(|w| match w {
            ["cont-exec", inst, ..] => Some((*inst).to_owned()),
            _ => None,
        });
        let mut execs: HashMap<(String, String, String), At> = HashMap::new();
        let mut ok_runs: HashMap<String, usize> = HashMap::new();
        let mut maybe_lost: HashMap<String, usize> = HashMap::new();
        let mut started = HashSet::new();
        for ((i, j), w) in self.lines() {
            match w.as_slice() {
                ["ack", "start", inst, _] => {
                    tally.acknowledged += 1;
                    started.insert((*inst).to_owned());
                }
                // The next incarnation starts it again, if there is one.
                ["lost", "ticker", inst] => {
                    tally.lost_to_cuts += 1;
                    started.remove(*inst);
                }
                ["ack", "ctrigger", _, _] => tally.acknowledged += 1,
                ["cont-exec", inst, run, attempt, how] => {
                    let key = ((*inst).to_owned(), (*run).to_owned(), (*attempt).to_owned());
                    let uncommitted = self.maybe_uncommitted((i, j), inst, &last);
                    match execs.insert(key, (i, j)) {
                        Some((pi, pj)) => {
                            if self.maybe_uncommitted((pi, pj), inst, &last) {
                                tally.continuous_reruns += 1;
                                if *how == "ok" {
                                    // Counted once already, as possibly lost.
                                    *maybe_lost.entry((*inst).to_owned()).or_default() -= 1;
                                }
                            } else {
                                fail(format!(
                                    "ticker {inst} run {run} attempt {attempt} ran again after it committed"
                                ));
                            }
                        }
                        None if *how == "ok" => {
                            *ok_runs.entry((*inst).to_owned()).or_default() += 1;
                        }
                        None => {}
                    }
                    if *how == "ok" && uncommitted {
                        *maybe_lost.entry((*inst).to_owned()).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        for inst in &started {
            match db.tickers.get(inst) {
                Some((Some(ticks), true)) => {
                    let ran = ok_runs.get(inst).copied().unwrap_or(0);
                    let lost = maybe_lost.get(inst).copied().unwrap_or(0);
                    if ticks.runs > ran as u64 || (ticks.runs as usize) + lost < ran {
                        fail(format!(
                            "ticker {inst}: state counts {} runs; {ran} succeeded, {lost} of them maybe uncommitted",
                            ticks.runs
                        ));
                    }
                }
                other => fail(format!("ticker {inst} after the drain: {other:?}")),
            }
        }
    }
}
