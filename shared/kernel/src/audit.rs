//! The audit log: every decision the system makes on a task, as hash-chained records
//! committed with the wake that made them.
//!
//! Rule: a session's records form one chain. Each record holds the hash of the one
//! before it (the first holds a genesis hash that names its task, agent and session)
//! and its own hash over everything else it says. The chain's head (sequence number
//! and hash) is part of the session state, and the session commit is conditioned on
//! its version, so concurrent or retried wakes can never fork or rewrite a chain.
//! [`verify`] recomputes every hash and link, and names the first record that does not
//! match; a record changed in the store by one byte fails it.
//!
//! Records are stored as timeline events of kind [`EventKind::Audit`] (the same
//! atomic write as the wake's other events); timelines people read leave them out.

use crate::ids::{EnvelopeId, EventId, TaskId};
use crate::model::{AuditHead, Event, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    pub task: TaskId,
    pub agent: String,
    pub session: String,
    /// 1 for a session's first record, then one more for each.
    pub seq: u64,
    /// The hash of the record before this one in its session's chain (or the genesis
    /// hash for the first).
    pub prev: String,
    pub at: u64,
    /// The envelope whose wake made the decision.
    pub envelope: EnvelopeId,
    /// What was decided: `received`, `model_call`, `tool_call`, `tool_result`,
    /// `message_sent`, `approval_asked`, `approval_decided`, `answer`, `stopped`.
    pub action: String,
    pub data: Value,
    /// SHA-256 over all of the above, in hex.
    pub hash: String,
}

/// The hash every session's chain starts from: binds the chain to its place.
pub fn genesis(task: TaskId, agent: &str, session: &str) -> String {
    sha256_hex(format!("aos-audit-genesis\n{task}\n{agent}\n{session}").as_bytes())
}

/// SHA-256 of bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AuditRecord {
    /// The hash this record should carry: over its JSON with `hash` empty. Map keys
    /// of `data` are sorted by serde_json, so a stored record re-hashes the same.
    pub fn compute_hash(&self) -> String {
        let mut bare = self.clone();
        bare.hash = String::new();
        sha256_hex(&serde_json::to_vec(&bare).unwrap_or_default())
    }
}

/// Chains `entries` (action, data) onto `head` and returns them as the one stored
/// event of the wake of `envelope` (a JSON array of records: one row per wake rather
/// than per record), advancing `head`. No entries, no event.
#[allow(clippy::too_many_arguments)]
pub fn chain(
    head: &mut AuditHead,
    task: TaskId,
    agent: &str,
    session: &str,
    envelope: EnvelopeId,
    at: u64,
    entries: Vec<(String, Value)>,
) -> Option<Event> {
    if entries.is_empty() {
        return None;
    }
    let mut records = Vec::with_capacity(entries.len());
    for (action, data) in entries {
        let prev = if head.seq == 0 {
            genesis(task, agent, session)
        } else {
            head.hash.clone()
        };
        let mut record = AuditRecord {
            task,
            agent: agent.to_string(),
            session: session.to_string(),
            seq: head.seq + 1,
            prev,
            at,
            envelope,
            action,
            data,
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        head.seq = record.seq;
        head.hash = record.hash.clone();
        records.push(record);
    }
    Some(Event {
        id: EventId(envelope.derive("audit", 0)),
        task,
        at,
        agent: agent.to_string(),
        kind: EventKind::Audit,
        detail: serde_json::to_string(&records).unwrap_or_default(),
        envelope: Some(envelope),
    })
}

/// The records a stored audit event holds (an array; a single record is read too).
pub fn records_of(event: &Event) -> Result<Vec<AuditRecord>, serde_json::Error> {
    match serde_json::from_str::<Vec<AuditRecord>>(&event.detail) {
        Ok(v) => Ok(v),
        Err(e) => serde_json::from_str::<AuditRecord>(&event.detail)
            .map(|r| vec![r])
            .map_err(|_| e),
    }
}

/// How a record that was itself changed is reported.
const CHANGED: &str = "changed";

/// A record that does not match, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Mismatch {
    /// The stored event that holds the record.
    pub event: EventId,
    /// `agent/session#seq` when the record could be read.
    pub record: String,
    pub reason: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AuditReport {
    pub task: Option<TaskId>,
    pub records: usize,
    pub chains: usize,
    /// The first record (in time order) that does not match; `None`: the log holds.
    pub first_mismatch: Option<Mismatch>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }
    /// The first record that does not match, if any.
    pub fn first_bad(&self) -> Option<&Mismatch> {
        self.first_mismatch.as_ref()
    }
    /// How many records were checked.
    pub fn records(&self) -> usize {
        self.records
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (event {}): {}",
            self.record, self.event, self.reason
        )
    }
}

/// Recomputes every chain in `events` (a task's stored events; non-audit ones are
/// skipped). `heads`: each session's stored chain head, `(agent, session, head)`, so a
/// record cut off the end of a chain is found too.
pub fn verify(
    task: TaskId,
    events: &[Event],
    heads: &[(String, String, AuditHead)],
) -> AuditReport {
    use std::collections::BTreeMap;
    let mut report = AuditReport {
        task: Some(task),
        ..AuditReport::default()
    };
    let mut bad: Vec<(u64, EventId, Mismatch)> = Vec::new();
    // (agent, session) -> records in seq order
    let mut chains: BTreeMap<(String, String), Vec<(&Event, AuditRecord)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.is_audit()) {
        match records_of(e) {
            Ok(rs) => {
                for r in rs {
                    report.records += 1;
                    chains
                        .entry((r.agent.clone(), r.session.clone()))
                        .or_default()
                        .push((e, r));
                }
            }
            Err(err) => bad.push((
                e.at,
                e.id,
                Mismatch {
                    event: e.id,
                    record: "unreadable".into(),
                    reason: format!("{CHANGED}: the stored record does not parse: {err}"),
                },
            )),
        }
    }
    report.chains = chains.len();
    for ((agent, session), mut records) in chains {
        records.sort_by_key(|(_, r)| r.seq);
        let mut prev = genesis(task, &agent, &session);
        let mut want_seq = 1;
        for (e, r) in &records {
            let name = format!("{agent}/{session}#{}", r.seq);
            let reason = if r.hash != r.compute_hash() {
                Some(format!("{CHANGED}: its hash does not match its contents"))
            } else if r.task != task || e.task != task {
                Some(format!("it belongs to task {}, not {task}", r.task))
            } else if r.seq != want_seq {
                Some(format!(
                    "sequence number {} where {want_seq} was expected (a record is missing)",
                    r.seq
                ))
            } else if r.prev != prev {
                Some("its link to the previous record does not match".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                bad.push((
                    e.at,
                    e.id,
                    Mismatch {
                        event: e.id,
                        record: name,
                        reason,
                    },
                ));
                break;
            }
            prev = r.hash.clone();
            want_seq += 1;
        }
        if let Some((_, _, head)) = heads.iter().find(|(a, s, _)| *a == agent && *s == session)
            && (head.seq != want_seq - 1 || (head.seq > 0 && head.hash != prev))
            && let Some((e, r)) = records.last()
            && !bad
                .iter()
                .any(|(_, _, m)| m.record.starts_with(&format!("{agent}/{session}#")))
        {
            bad.push((
                e.at,
                e.id,
                Mismatch {
                    event: e.id,
                    record: format!("{agent}/{session}#{}", r.seq),
                    reason: format!(
                        "the session's chain ends at record {} but the log ends here (records were removed)",
                        head.seq
                    ),
                },
            ));
        }
    }
    // A record whose own hash fails is the one that was changed; the broken links
    // and gaps it causes elsewhere come after it.
    bad.sort_by_key(|(at, id, m)| (!m.reason.starts_with(CHANGED), *at, *id));
    report.first_mismatch = bad.into_iter().next().map(|(_, _, m)| m);
    report
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log() -> (TaskId, Vec<Event>, AuditHead) {
        let task = TaskId::new(1_700_000_000_000);
        let mut head = AuditHead::default();
        let mut events: Vec<Event> = chain(
            &mut head,
            task,
            "primary",
            "s1",
            EnvelopeId::new(1_700_000_000_001),
            1,
            vec![
                ("received".into(), json!({"kind": "task"})),
                ("model_call".into(), json!({"model": "offline"})),
            ],
        )
        .into_iter()
        .collect();
        events.extend(chain(
            &mut head,
            task,
            "primary",
            "s1",
            EnvelopeId::new(1_700_000_000_002),
            2,
            vec![("answer".into(), json!({"chars": 3}))],
        ));
        (task, events, head)
    }

    #[test]
    fn a_chain_verifies_and_any_changed_byte_is_named() {
        let (task, events, head) = log();
        let heads = vec![("primary".to_string(), "s1".to_string(), head)];
        let ok = verify(task, &events, &heads);
        assert!(ok.ok(), "{ok:?}");
        assert_eq!((ok.records, ok.chains), (3, 1));

        assert_eq!(events.len(), 2, "one stored event per wake");

        let mut tampered = events.clone();
        tampered[0].detail = tampered[0].detail.replace("offline", "offlinf");
        let report = verify(task, &tampered, &heads);
        let m = report.first_mismatch.unwrap();
        assert_eq!(m.event, events[0].id);
        assert_eq!(m.record, "primary/s1#2");

        let mut cut = events.clone();
        cut.pop();
        let report = verify(task, &cut, &heads);
        assert!(report.first_mismatch.unwrap().reason.contains("removed"));

        let mut dropped = events.clone();
        dropped.remove(0);
        let report = verify(task, &dropped, &heads);
        assert_eq!(report.first_mismatch.unwrap().record, "primary/s1#3");
    }
}
