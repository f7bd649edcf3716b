//! The one error type of the UWS layer; the frontend maps each variant to an HTTP status and a
//! DALI label in a single place.

use crate::job::ExecutionPhase;

#[derive(Debug, thiserror::Error)]
pub enum UwsError {
    /// Bad input from the client (DALI `UsageError`, 400).
    #[error("{0}")]
    Usage(String),
    /// No such job for this owner; another owner's job is reported the same way.
    #[error("job {0} not found")]
    JobNotFound(String),
    /// A resource of the job that does not exist in its current state (`/error` of a job that did
    /// not fail, `/results/x` that is not a result).
    #[error("{0}")]
    ResourceNotFound(String),
    /// The request is valid but not in the job's current phase (UWS answers 403 for parameter
    /// changes outside PENDING).
    #[error("job {id} is {phase}: {what}")]
    WrongPhase {
        id: String,
        phase: ExecutionPhase,
        what: String,
    },
    /// A phase transition that the state machine refuses (a late or duplicate message).
    #[error("job {id} cannot go from {from} to {to}")]
    IllegalTransition {
        id: String,
        from: ExecutionPhase,
        to: ExecutionPhase,
    },
    /// A job ID that already names a different job: a create repeated with other parameters or
    /// another owner (an `Idempotency-Key` reused for a different request).
    #[error("{0}")]
    Conflict(String),
    /// The store refused a new job because its owner is at a limit of [`crate::Admission`].
    #[error("over quota: {0}")]
    OverQuota(String),
    /// The job store could not be reached or failed.
    #[error("job store: {0}")]
    Store(String),
    /// The queue could not be reached or failed.
    #[error("job queue: {0}")]
    Queue(String),
    /// The result store could not be reached or failed.
    #[error("result store: {0}")]
    ResultStore(String),
}
