//! The UWS job model and the execution-phase state machine.
//!
//! Every store applies [`ExecutionPhase::can_become`] before it writes a phase, so a duplicate or
//! late message (a worker that was presumed dead, a second `PHASE=RUN`) can never move a job
//! backwards or out of a final phase.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use time::OffsetDateTime;

use crate::error::UwsError;

/// An unguessable job identifier: 128 random bits, lower-case hex.
///
/// Unguessable matters: another user's job answers 404 exactly as a missing one, so an ID must
/// not be derivable from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub fn random() -> JobId {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        JobId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The job ID that a client's `Idempotency-Key` stands for: the first 128 bits of
    /// SHA-256 over the owner and the key (each length-prefixed, so no two pairs run together).
    /// Only the owner can produce it (the owner is the authenticated user, never a parameter),
    /// and another owner's job answers 404 whatever its ID, so it needs no secret.
    pub fn for_idempotency_key(owner: &str, key: &str) -> JobId {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"skycut idempotency key v1\n");
        for part in [owner, key] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        JobId(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Accepts what [`JobId::random`] produces; anything else cannot name a job.
    pub fn parse(s: &str) -> Result<JobId, UwsError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(JobId(s.to_owned()))
        } else {
            Err(UwsError::JobNotFound(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The UWS `ExecutionPhase`. `HELD` and `SUSPENDED` are never entered by this service (clients
/// such as pyvo treat them as stuck) but are parsed for completeness; a COMPLETED job becomes
/// `ARCHIVED` when its results expire before the job is destroyed (`jobs.result_lifetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionPhase {
    Pending,
    Queued,
    Executing,
    Completed,
    Error,
    Aborted,
    Unknown,
    Held,
    Suspended,
    Archived,
}

impl ExecutionPhase {
    pub const ALL: [ExecutionPhase; 10] = [
        ExecutionPhase::Pending,
        ExecutionPhase::Queued,
        ExecutionPhase::Executing,
        ExecutionPhase::Completed,
        ExecutionPhase::Error,
        ExecutionPhase::Aborted,
        ExecutionPhase::Unknown,
        ExecutionPhase::Held,
        ExecutionPhase::Suspended,
        ExecutionPhase::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionPhase::Pending => "PENDING",
            ExecutionPhase::Queued => "QUEUED",
            ExecutionPhase::Executing => "EXECUTING",
            ExecutionPhase::Completed => "COMPLETED",
            ExecutionPhase::Error => "ERROR",
            ExecutionPhase::Aborted => "ABORTED",
            ExecutionPhase::Unknown => "UNKNOWN",
            ExecutionPhase::Held => "HELD",
            ExecutionPhase::Suspended => "SUSPENDED",
            ExecutionPhase::Archived => "ARCHIVED",
        }
    }

    /// Phases in which a job may still change by itself; `WAIT` blocks only in these.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ExecutionPhase::Pending | ExecutionPhase::Queued | ExecutionPhase::Executing
        )
    }

    /// Phases a job ends in: it never runs again, and only deletion (or, for COMPLETED, the
    /// archiving of its results) changes it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionPhase::Completed
                | ExecutionPhase::Error
                | ExecutionPhase::Aborted
                | ExecutionPhase::Archived
        )
    }

    /// The UWS state machine as this service runs it:
    /// PENDING → QUEUED → EXECUTING → COMPLETED | ERROR, and ABORTED or ERROR from any active phase.
    /// `EXECUTING → QUEUED` hands a job back to the queue (a draining or dead worker);
    /// `COMPLETED → ARCHIVED` deletes the results of a job that is kept.
    pub fn can_become(self, next: ExecutionPhase) -> bool {
        use ExecutionPhase::*;
        matches!(
            (self, next),
            (Pending, Queued)
                | (Queued, Executing)
                | (Executing, Queued)
                | (Executing, Completed)
                | (Pending | Queued | Executing, Error)
                | (Pending | Queued | Executing, Aborted)
                | (Completed, Archived)
        )
    }
}

impl fmt::Display for ExecutionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionPhase {
    type Err = UwsError;

    /// Phase names are enumerations declared case-insensitive (clients send `run` as well as `RUN`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecutionPhase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UwsError::Usage(format!("unknown PHASE {s:?}")))
    }
}

/// `errorSummary/@type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Fatal,
    Transient,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Fatal => "fatal",
            ErrorType::Transient => "transient",
        }
    }
}

/// Why a job failed, in the words of the DALI/SODA error labels.
///
/// The code decides the label a client reads and, for a synchronous request, the HTTP status;
/// the store keeps it so that a sync waiter can answer exactly as the job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad input (`UsageError`, 400).
    Usage,
    /// A parameter given more often than the service supports (SODA 1.0 §3.1 and §5.2:
    /// `MultiValuedParamNotSupported`, 400).
    MultiValued,
    /// The input names something that does not exist (`UsageError`, 404).
    NotFound,
    /// The request is valid but selects no data (`UsageError`; a synchronous SODA request
    /// answers 204 No Content).
    NoData,
    /// A dependency failed; trying again later may work (`ServiceUnavailable`, 503).
    Unavailable,
    /// The service failed (`Error`, 500).
    Internal,
}

impl ErrorCode {
    /// The DALI error label that starts the message a client reads.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::Usage | ErrorCode::NotFound | ErrorCode::NoData => "UsageError",
            ErrorCode::MultiValued => "MultiValuedParamNotSupported",
            ErrorCode::Unavailable => "ServiceUnavailable",
            ErrorCode::Internal => "Error",
        }
    }

    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Usage => "usage",
            ErrorCode::MultiValued => "multi-valued",
            ErrorCode::NotFound => "not-found",
            ErrorCode::NoData => "no-data",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        [
            ErrorCode::Usage,
            ErrorCode::MultiValued,
            ErrorCode::NotFound,
            ErrorCode::NoData,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    pub fn error_type(self) -> ErrorType {
        match self {
            ErrorCode::Unavailable => ErrorType::Transient,
            ErrorCode::Usage
            | ErrorCode::MultiValued
            | ErrorCode::NotFound
            | ErrorCode::NoData
            | ErrorCode::Internal => ErrorType::Fatal,
        }
    }
}

/// The error of a job in phase `ERROR`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub code: ErrorCode,
    /// Human text without the label, e.g. `CIRCLE radius must be positive`.
    pub message: String,
}

impl JobError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> JobError {
        JobError {
            code,
            message: message.into(),
        }
    }

    /// The text a client reads: `UsageError: CIRCLE radius must be positive`.
    pub fn labelled(&self) -> String {
        format!("{}: {}", self.code.label(), self.message)
    }
}

/// One entry of a job's result list. The key names the object in the result store; the URL a
/// client follows is signed afresh from it on every read and never stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub id: String,
    pub key: String,
    pub mime_type: String,
    pub size: Option<u64>,
}

/// What a job is created with; the store fills in the rest.
///
/// The caller draws the ID before the first attempt, so that an attempt whose answer was lost
/// can be repeated: the store creates a job once per ID (see [`crate::store::JobStore::create`]).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub owner: String,
    pub run_id: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub execution_duration: u32,
    pub destruction: OffsetDateTime,
    pub creation_time: OffsetDateTime,
    /// Created QUEUED (`PHASE=RUN` at creation) in the one write that creates it, instead of
    /// PENDING and then a transition. A store that does not know this creates the job PENDING.
    pub queued: bool,
    /// A synchronous request's job: its client waits on the open connection, which is all the
    /// durability it needs (a crash loses the request either way, and the client retries), so
    /// the store need not put its writes on disk before it answers. A store that does not know
    /// this writes them durably.
    pub sync: bool,
    /// The limits the store enforces on the owner atomically with this insert, and the bytes the
    /// job is planned to store.
    pub admission: Admission,
    /// How big the job is before it runs, as counts with nothing done (a bulk job's stamps,
    /// images and shards), stored as the job's first [`Job::progress`]; `None` for most jobs.
    pub progress: Option<Progress>,
}

/// What the store checks before it admits a new job, in the same atomic step as the insert (one
/// owner's concurrent creates are serialised), so that racing requests cannot all pass a check
/// made before any of them was written. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// Bytes the job's results are planned to take; while the job is not final they are counted
    /// against `result_bytes` (reserved), and the quote prices the job from them.
    pub planned_bytes: Option<u64>,
    /// Jobs the owner may create in the hour before the job's creation time, counted in a
    /// ledger of creations that deleting a job does not touch.
    pub jobs_per_hour: Option<u64>,
    /// Jobs the owner may have QUEUED; checked only for a job created QUEUED.
    pub jobs_queued: Option<u64>,
    /// Bytes the owner's results may take: a job is admitted while those of COMPLETED jobs plus
    /// those planned for unfinished ones are under it (its own are then reserved).
    pub result_bytes: Option<u64>,
}

impl Admission {
    /// True when the store has nothing to check.
    pub fn is_unlimited(&self) -> bool {
        self.jobs_per_hour.is_none() && self.jobs_queued.is_none() && self.result_bytes.is_none()
    }
}

/// A UWS job as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub run_id: Option<String>,
    pub owner: String,
    pub phase: ExecutionPhase,
    pub quote: Option<OffsetDateTime>,
    pub creation_time: OffsetDateTime,
    pub start_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    /// Seconds; 0 means unlimited.
    pub execution_duration: u32,
    pub destruction: OffsetDateTime,
    /// Parameter names upper-cased (DALI names are case-insensitive), values as the client sent them.
    pub parameters: Vec<(String, String)>,
    pub results: Vec<JobResult>,
    pub error: Option<JobError>,
    /// Bytes the results were planned to take when the job was created, if known.
    pub planned_bytes: Option<u64>,
    /// How far the job has come, as its worker last said (shown in `jobInfo`).
    pub progress: Option<Progress>,
}

/// How far an executing job has come, counted in units its service names (a bulk job's stamps
/// and images): what UWS leaves to `jobInfo`. The job store keeps the last report; a worker
/// reports it every few seconds, never durably (a lost report is only a stale count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress(pub Vec<ProgressCount>);

/// `done` of `total` units called `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressCount {
    pub name: String,
    pub done: u64,
    pub total: u64,
}

impl Progress {
    /// One line per count, `name done total`: what the store keeps.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|c| format!("{} {} {}", c.name, c.done, c.total))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads back what [`Progress::encode`] wrote; `None` if it is not that.
    pub fn decode(text: &str) -> Option<Progress> {
        text.lines()
            .map(|line| {
                let mut fields = line.split(' ');
                let name = fields.next().filter(|n| !n.is_empty())?.to_owned();
                let done = fields.next()?.parse().ok()?;
                let total = fields.next()?.parse().ok()?;
                fields
                    .next()
                    .is_none()
                    .then_some(ProgressCount { name, done, total })
            })
            .collect::<Option<Vec<_>>>()
            .map(Progress)
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionPhase::*;
    use super::*;

    #[test]
    fn progress_reads_back_as_stored() {
        let progress = Progress(vec![
            ProgressCount {
                name: "stamps".into(),
                done: 1500,
                total: 100_000,
            },
            ProgressCount {
                name: "images".into(),
                done: 2,
                total: 100,
            },
        ]);
        assert_eq!(Progress::decode(&progress.encode()), Some(progress));
        assert_eq!(Progress::decode("stamps 1 two"), None);
        assert_eq!(Progress::decode("stamps 1 2 3"), None);
    }

    #[test]
    fn job_runs_through_queue_and_execution() {
        assert!(Pending.can_become(Queued));
        assert!(Queued.can_become(Executing));
        assert!(Executing.can_become(Completed));
        assert!(Executing.can_become(Error));
    }

    #[test]
    fn final_phases_never_change_but_completed_may_be_archived() {
        for from in [Completed, Error, Aborted, Archived] {
            for to in ExecutionPhase::ALL {
                let archiving = (from, to) == (Completed, Archived);
                assert_eq!(from.can_become(to), archiving, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn phases_never_move_backwards() {
        assert!(!Queued.can_become(Pending));
        assert!(!Executing.can_become(Pending));
        assert!(!Pending.can_become(Executing));
        assert!(!Pending.can_become(Completed));
        assert!(!Queued.can_become(Completed));
    }

    #[test]
    fn active_jobs_can_be_aborted() {
        for from in [Pending, Queued, Executing] {
            assert!(from.can_become(Aborted));
        }
    }

    #[test]
    fn phase_names_are_case_insensitive() {
        assert_eq!("run".parse::<ExecutionPhase>().ok(), None);
        assert_eq!("queued".parse::<ExecutionPhase>().ok(), Some(Queued));
        assert_eq!("EXECUTING".parse::<ExecutionPhase>().ok(), Some(Executing));
        assert!("FINISHED".parse::<ExecutionPhase>().is_err());
    }

    #[test]
    fn job_ids_are_unguessable_hex() {
        let a = JobId::random();
        let b = JobId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(JobId::parse(a.as_str()).ok(), Some(a));
        assert!(JobId::parse("../etc/passwd").is_err());
        assert!(JobId::parse("ABCDEF00ABCDEF00ABCDEF00ABCDEF00").is_err());
    }

    /// Every one of the 10 x 10 phase pairs, against the state machine written out as a table:
    /// a row per current phase, `1` where the store accepts moving to the column's phase.
    #[test]
    fn the_state_machine_is_exactly_this_table() {
        //             PEN QUE EXE COM ERR ABO UNK HEL SUS ARC
        let table: [(ExecutionPhase, [u8; 10]); 10] = [
            (Pending, [0, 1, 0, 0, 1, 1, 0, 0, 0, 0]),
            (Queued, [0, 0, 1, 0, 1, 1, 0, 0, 0, 0]),
            (Executing, [0, 1, 0, 1, 1, 1, 0, 0, 0, 0]),
            (Completed, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            (Error, [0; 10]),
            (Aborted, [0; 10]),
            (Unknown, [0; 10]),
            (Held, [0; 10]),
            (Suspended, [0; 10]),
            (Archived, [0; 10]),
        ];
        for (row, (from, allowed)) in table.into_iter().enumerate() {
            assert_eq!(
                from,
                ExecutionPhase::ALL[row],
                "rows follow ExecutionPhase::ALL"
            );
            for (to, allowed) in ExecutionPhase::ALL.into_iter().zip(allowed) {
                assert_eq!(from.can_become(to), allowed == 1, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn active_and_final_phases_are_these() {
        let active: Vec<_> = ExecutionPhase::ALL
            .into_iter()
            .filter(|p| p.is_active())
            .collect();
        assert_eq!(active, [Pending, Queued, Executing]);
        let done: Vec<_> = ExecutionPhase::ALL
            .into_iter()
            .filter(|p| p.is_final())
            .collect();
        assert_eq!(done, [Completed, Error, Aborted, Archived]);
    }

    #[test]
    fn every_phase_name_parses_back() {
        let names = [
            "PENDING",
            "QUEUED",
            "EXECUTING",
            "COMPLETED",
            "ERROR",
            "ABORTED",
            "UNKNOWN",
            "HELD",
            "SUSPENDED",
            "ARCHIVED",
        ];
        for (phase, name) in ExecutionPhase::ALL.into_iter().zip(names) {
            assert_eq!(phase.as_str(), name);
            assert_eq!(phase.to_string(), name);
            assert_eq!(name.parse::<ExecutionPhase>().ok(), Some(phase));
            let lower = format!(" {} ", name.to_lowercase());
            assert_eq!(lower.parse::<ExecutionPhase>().ok(), Some(phase));
        }
    }

    #[test]
    fn every_error_code_is_rendered_and_parsed_back() {
        use ErrorCode::*;
        // (code, storage name, DALI label, errorSummary type)
        let table = [
            (Usage, "usage", "UsageError", ErrorType::Fatal),
            (
                MultiValued,
                "multi-valued",
                "MultiValuedParamNotSupported",
                ErrorType::Fatal,
            ),
            (NotFound, "not-found", "UsageError", ErrorType::Fatal),
            (NoData, "no-data", "UsageError", ErrorType::Fatal),
            (
                Unavailable,
                "unavailable",
                "ServiceUnavailable",
                ErrorType::Transient,
            ),
            (Internal, "internal", "Error", ErrorType::Fatal),
        ];
        for (code, name, label, kind) in table {
            assert_eq!(code.as_str(), name);
            assert_eq!(ErrorCode::parse(name), Some(code));
            assert_eq!(code.label(), label, "{name}");
            assert_eq!(code.error_type(), kind, "{name}");
            assert_eq!(
                JobError::new(code, "it broke").labelled(),
                format!("{label}: it broke")
            );
        }
        assert_eq!(ErrorType::Fatal.as_str(), "fatal");
        assert_eq!(ErrorType::Transient.as_str(), "transient");
        for unknown in ["", "Usage", "USAGE", "notfound", "fatal"] {
            assert_eq!(ErrorCode::parse(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_job_id_is_exactly_32_lower_case_hex_digits() {
        let ok = "0123456789abcdef0123456789abcdef";
        assert!(JobId::parse(ok).is_ok());
        for bad in [
            &ok[..31],
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdeg0123456789abcdef",
            "0123456789abcdef0123456789abcde/",
            "0123456789abcdef0123456789abcde`",
        ] {
            assert!(
                matches!(JobId::parse(bad), Err(UwsError::JobNotFound(_))),
                "{bad}"
            );
        }
        let id = JobId::random();
        assert_eq!(id.to_string(), id.as_str());
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn an_idempotency_key_names_one_job_per_owner() {
        let a = JobId::for_idempotency_key("alice", "k1");
        assert_eq!(a, JobId::for_idempotency_key("alice", "k1"));
        assert_eq!(JobId::parse(a.as_str()).ok(), Some(a.clone()));
        assert_ne!(a, JobId::for_idempotency_key("bob", "k1"));
        assert_ne!(a, JobId::for_idempotency_key("alice", "k2"));
        // Length prefixes: the same concatenation split differently is another job.
        assert_ne!(
            JobId::for_idempotency_key("ab", "c"),
            JobId::for_idempotency_key("a", "bc")
        );
    }

    #[test]
    fn an_admission_is_unlimited_only_without_any_limit() {
        assert!(Admission::default().is_unlimited());
        // Planned bytes alone are a figure to store, not a limit to check.
        let planned = Admission {
            planned_bytes: Some(10),
            ..Admission::default()
        };
        assert!(planned.is_unlimited());
        for limited in [
            Admission {
                jobs_per_hour: Some(5),
                ..Admission::default()
            },
            Admission {
                jobs_queued: Some(3),
                ..Admission::default()
            },
            Admission {
                result_bytes: Some(1),
                ..Admission::default()
            },
        ] {
            assert!(!limited.is_unlimited(), "{limited:?}");
        }
    }
}
