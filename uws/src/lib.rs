//! The IVOA Universal Worker Service (UWS 1.1) protocol, without any knowledge of what a job does.
//!
//! Read [`job`] first: the job model and the phase state machine that every store enforces.
//! A request flows through the crate as: [`params::Parameters`] (DALI parameter list, names
//! case-insensitive) → [`service::Uws`] (create, run, abort, wait, delete a job through the
//! [`store::JobStore`], [`queue::JobQueue`] and [`events::PhaseEvents`] traits, and
//! [`health::HealthCheck`] for availability) → [`xml`]
//! (the UWS and DALI documents a client reads).
//!
//! What a job *does* is someone else's business: the service that embeds this crate validates
//! parameters before calling [`service::Uws::create`], and a worker moves the job through
//! `EXECUTING` to `COMPLETED` or `ERROR` with [`store::Transition`]s.
//!
//! Architecture invariant: this crate never reads the environment, opens a connection or knows
//! about HTTP; its callers pass every resource in.

pub mod error;
pub mod events;
pub mod health;
pub mod job;
pub mod params;
pub mod queue;
pub mod results;
pub mod service;
pub mod sky_index;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timestamp;
pub mod xml;

#[cfg(test)]
mod service_tests;

pub use error::UwsError;
pub use job::{
    Admission, ErrorCode, ErrorType, ExecutionPhase, Job, JobError, JobId, JobResult, NewJob,
    Progress, ProgressCount,
};
pub use params::Parameters;
