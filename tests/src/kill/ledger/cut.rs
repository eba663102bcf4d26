//! What a power cut lost: every effect the children had acknowledged, looked for in what the
//! disk held after the cut.
//!
//! An acknowledged effect is one the child printed as done after the engine returned it: a
//! step-job run (`ack step`), a completed step (`step-done`, printed once `step.run` returned its
//! output), an accepted event (`ack`/`dup` of an `add` or a `send`: its event id is recorded
//! with it) and a started ticker (`ack start`). With `synchronous = FULL` none may be lost.
//! With `NORMAL` the last commits may be, but only as a whole suffix of the commit order: the
//! disk holds the log up to some commit, never a later commit without an earlier one. The
//! ledger cannot see the commit order itself, but it sees enough of it: an effect acknowledged
//! before another was even asked for committed before it. So a lost effect acknowledged before
//! a surviving one was issued is a *hole*, which no synchronous mode allows.
//!
//! The disk is read with SQL ([`Held`]), not through an engine: an engine would run the step
//! runs the cut left pending while they are read, out of the ledger's sight.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;

use super::{At, Ledger};

/// What the disk holds of the effects the ledger looks for, read from the engine's tables.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Every recorded event id (of `add`s and `send`s).
    pub event_ids: HashSet<String>,
    /// Each step-job run by its idempotency key (its operation): whether it ended, and the
    /// names of its completed steps.
    pub runs: HashMap<String, (bool, HashSet<String>)>,
    /// Every stored continuous instance.
    pub tickers: HashSet<String>,
}

impl Held {
    /// Reads `conn`'s database; a database without the engine's tables (a file created and
    /// lost before the engine wrote its schema) holds nothing.
    pub fn read(conn: &Connection) -> rusqlite::Result<Held> {
        let mut held = Held::default();
        let tables: HashSet<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if tables.contains("event_ids") {
            held.event_ids = conn
                .prepare("SELECT event_id FROM event_ids")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
        }
        if tables.contains("instances") {
            held.tickers = conn
                .prepare("SELECT id FROM instances WHERE kind = 'continuous'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
        }
        if tables.contains("durably_runs") {
            let mut rows = conn.prepare(
                "SELECT r.idempotency_key, r.status IN ('completed', 'failed', 'cancelled'), s.name
                 FROM durably_runs r
                 LEFT JOIN durably_steps s ON s.run_id = r.id AND s.status = 'completed'
                 WHERE r.idempotency_key IS NOT NULL",
            )?;
            let rows = rows.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            for row in rows {
                let (op, ended, step) = row?;
                let run = held.runs.entry(op).or_default();
                run.0 = ended;
                run.1.extend(step);
            }
        }
        Ok(held)
    }
}

/// An acknowledged effect the disk must hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    /// The step-job run of this operation exists (its trigger was acknowledged).
    Run(String),
    /// This step of the operation's run is completed (`step.run` returned its output).
    Step(String, String),
    /// The event with this id was accepted: an `add` (`e<n>`) or a `send` (its operation).
    Event(String),
    /// This ticker exists (its `start` was acknowledged).
    Ticker(String),
}

impl Effect {
    /// The line the ledger keeps for it once a cut lost it.
    pub fn lost_line(&self) -> String {
        match self {
            Effect::Run(op) => format!("lost run {op}"),
            Effect::Step(op, step) => format!("lost step {op} {step}"),
            Effect::Event(id) => format!("lost event {id}"),
            Effect::Ticker(inst) => format!("lost ticker {inst}"),
        }
    }

    fn held_by(&self, held: &Held) -> bool {
        match self {
            Effect::Run(op) => held.runs.contains_key(op),
            // A run that ended keeps no steps (unless `preserve_steps`): none of them runs again.
            Effect::Step(op, step) => held
                .runs
                .get(op)
                .is_some_and(|(ended, steps)| *ended || steps.contains(step)),
            Effect::Event(id) => held.event_ids.contains(id),
            Effect::Ticker(inst) => held.tickers.contains(inst),
        }
    }
}

/// Where an effect stands in the ledger since it was last lost (if ever).
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// When it was first asked for: its commit came later.
    issued: Option<At>,
    /// When it was first acknowledged: its commit came earlier.
    acked: Option<At>,
}

/// What the disk held of the acknowledged effects after one cut.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    /// Acknowledged effects looked for.
    pub checked: usize,
    /// Those the disk did not hold, in the order of their acknowledgements.
    pub lost: Vec<Effect>,
    /// Of the lost, those acknowledged by an incarnation before the one the cut ended.
    pub lost_from_earlier_lives: usize,
    /// Lost effects acknowledged before a surviving effect was asked for.
    pub holes: Vec<String>,
}

impl Ledger {
    /// Looks for every acknowledged effect not already lost in what the disk `held` after a
    /// cut.
    pub fn audit_cut(&self, held: &Held) -> Audit {
        let mut tracks: HashMap<Effect, Track> = HashMap::new();
        let mut entered: HashMap<(String, String), At> = HashMap::new();
        let issue = |tracks: &mut HashMap<Effect, Track>, effect: Effect, at: At| {
            let track = tracks.entry(effect).or_default();
            track.issued.get_or_insert(at);
        };
        let ack = |tracks: &mut HashMap<Effect, Track>, effect: Effect, at: At| {
            let track = tracks.entry(effect).or_default();
            track.acked.get_or_insert(at);
        };
        for (at, w) in self.lines() {
            match w.as_slice() {
                ["issue", "step", op, _] => issue(&mut tracks, Effect::Run((*op).into()), at),
                ["ack", "step", op, ..] => ack(&mut tracks, Effect::Run((*op).into()), at),
                ["step-enter", op, step, _] => {
                    entered.insert(((*op).into(), (*step).into()), at);
                }
                ["step-done", op, step] => {
                    let effect = Effect::Step((*op).into(), (*step).into());
                    if let Some(&enter) = entered.get(&((*op).into(), (*step).into())) {
                        issue(&mut tracks, effect.clone(), enter);
                    }
                    ack(&mut tracks, effect, at);
                }
                ["issue", "add", n] => issue(&mut tracks, Effect::Event(format!("e{n}")), at),
                ["ack" | "dup", "add", n, ..] => {
                    ack(&mut tracks, Effect::Event(format!("e{n}")), at)
                }
                ["issue", "send", _, op, ..] => issue(&mut tracks, Effect::Event((*op).into()), at),
                ["ack" | "dup", "send", op] => ack(&mut tracks, Effect::Event((*op).into()), at),
                ["ack", "start", inst, _] => ack(&mut tracks, Effect::Ticker((*inst).into()), at),
                ["lost", ..] => {
                    // Lost at an earlier cut: looked for again only once acknowledged again.
                    if let Some(effect) = lost_effect(&w) {
                        tracks.remove(&effect);
                    }
                }
                _ => {}
            }
        }
        let last_life = self.incarnations.len().saturating_sub(1);
        let mut audit = Audit::default();
        let mut lost: Vec<(At, Effect)> = Vec::new();
        // The survivor asked for last, and the lost effect acknowledged first.
        let mut latest_survivor: Option<(At, &Effect)> = None;
        for (effect, track) in &tracks {
            let Some(acked) = track.acked else { continue };
            audit.checked += 1;
            if effect.held_by(held) {
                if let Some(issued) = track.issued {
                    if latest_survivor.is_none_or(|(at, _)| issued > at) {
                        latest_survivor = Some((issued, effect));
                    }
                }
            } else {
                lost.push((acked, effect.clone()));
            }
        }
        lost.sort();
        if let (Some((first_lost, lost_effect)), Some((survivor_issued, survivor))) =
            (lost.first(), latest_survivor)
        {
            if *first_lost < survivor_issued {
                audit.holes.push(format!(
                    "{lost_effect:?}, acknowledged at {first_lost:?}, is lost, but {survivor:?}, \
                     asked for later at {survivor_issued:?}, survived"
                ));
            }
        }
        audit.lost_from_earlier_lives = lost.iter().filter(|(at, _)| at.0 < last_life).count();
        audit.lost = lost.into_iter().map(|(_, e)| e).collect();
        audit
    }
}

/// The effect a `lost ...` line names.
fn lost_effect(w: &[&str]) -> Option<Effect> {
    Some(match w {
        ["lost", "run", op] => Effect::Run((*op).into()),
        ["lost", "step", op, step] => Effect::Step((*op).into(), (*step).into()),
        ["lost", "event", id] => Effect::Event((*id).into()),
        ["lost", "ticker", inst] => Effect::Ticker((*inst).into()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use durable_jobs::steps::RunStatus;

    use super::super::{Final, Ledger};
    use super::*;

    fn ledger(lines: &[&str]) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.record(lines.iter().map(|l| (*l).to_owned()).collect(), true);
        ledger
    }

    fn events(ids: &[&str]) -> Held {
        Held {
            event_ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            ..Held::default()
        }
    }

    const THREE_ADDS: &[&str] = &[
        "issue add 1",
        "ack add 1 none",
        "issue add 2",
        "ack add 2 none",
        "issue add 3",
        "ack add 3 none",
    ];

    #[test]
    fn the_last_commits_lost_are_a_loss_not_a_hole() {
        let audit = ledger(THREE_ADDS).audit_cut(&events(&["e1", "e2"]));
        assert_eq!(audit.checked, 3);
        assert_eq!(audit.lost, [Effect::Event("e3".into())]);
        assert!(audit.holes.is_empty(), "{:?}", audit.holes);
    }

    #[test]
    fn an_earlier_commit_lost_under_a_later_one_is_a_hole() {
        let audit = ledger(THREE_ADDS).audit_cut(&events(&["e1", "e3"]));
        assert_eq!(audit.lost, [Effect::Event("e2".into())]);
        assert_eq!(audit.holes.len(), 1, "{audit:?}");
    }

    #[test]
    fn calls_in_flight_together_may_commit_in_either_order() {
        let lines = [
            "issue add 1",
            "issue add 2",
            "ack add 2 none",
            "ack add 1 none",
        ];
        let audit = ledger(&lines).audit_cut(&events(&["e1"]));
        assert_eq!(audit.lost, [Effect::Event("e2".into())]);
        assert!(audit.holes.is_empty(), "{:?}", audit.holes);
    }

    #[test]
    fn a_completed_step_is_held_by_its_stored_step_or_by_its_ended_run() {
        let lines = [
            "issue step a 0",
            "ack step a r1 created",
            "step-enter a one 1",
            "step-done a one",
        ];
        let mut held = Held::default();
        held.runs.insert("a".into(), (false, HashSet::new()));
        let audit = ledger(&lines).audit_cut(&held);
        assert_eq!(audit.lost, [Effect::Step("a".into(), "one".into())]);
        held.runs.insert("a".into(), (true, HashSet::new()));
        assert!(ledger(&lines).audit_cut(&held).lost.is_empty());
        held.runs
            .insert("a".into(), (false, HashSet::from(["one".to_owned()])));
        assert!(ledger(&lines).audit_cut(&held).lost.is_empty());
    }

    #[test]
    fn a_step_lost_at_a_cut_may_run_again_and_no_other() {
        let first_life = [
            "issue step a 0",
            "ack step a r1 created",
            "step-enter a one 1",
            "step-done a one",
        ];
        let second_life = [
            "step-enter a one 1",
            "step-done a one",
            "step-enter a two 1",
            "step-done a two",
            "step-enter a three 1",
            "step-done a three",
        ];
        let stored = Final {
            runs: vec![(
                "r1".into(),
                "a".into(),
                RunStatus::Completed,
                Some(vec!["one".into(), "two".into(), "three".into()]),
            )],
            ..Final::default()
        };
        let check = |lost: bool| {
            let mut ledger = ledger(&first_life);
            let mut held = Held::default();
            held.runs.insert("a".into(), (false, HashSet::new()));
            let audit = ledger.audit_cut(&held);
            if lost {
                ledger.record_cut(&audit, true);
            }
            ledger.record(second_life.iter().map(|l| (*l).to_owned()).collect(), false);
            ledger.check(&stored)
        };
        let tally = check(true).expect("a lost step runs again");
        assert_eq!(tally.lost_to_cuts, 1);
        let violations = check(false).expect_err("a step not lost must not run again");
        assert!(
            violations.contains("ran again after it completed"),
            "{violations}"
        );
    }
}
