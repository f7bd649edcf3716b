//! Wobbly, the UWS job store: the SQL schema, its migrations, and [`SqlJobStore`], the one
//! implementation of [`uws::store::JobStore`] that serves both PostgreSQL (production) and SQLite
//! (`skycut serve`), through sqlx's `Any` driver and runtime-checked queries.
//!
//! Read [`schema`] for the tables and [`store`] for how each UWS operation becomes SQL; the
//! phase state machine is applied inside the `UPDATE … WHERE phase IN (…)` itself, so concurrent
//! writers cannot move a job backwards.
//!
//! [`sky`] keeps the sky index (which images cover which HEALPix cells) in the same database.
//!
//! [`service`] serves the store over HTTP+JSON (`skycut wobbly`), authenticated with JWTs
//! ([`auth`]), in the wire format of [`api`]; [`client::WobblyClient`] is the `JobStore` that
//! frontends and workers use to reach it.
//!
//! Architecture invariant: wobbly knows UWS jobs, not what they compute (no SODA here), and
//! never reads configuration: the binary hands it a database URL.

pub mod api;
pub mod auth;
pub mod client;
mod health;
pub mod schema;
pub mod service;
pub mod sky;
pub mod store;
mod sync_jobs;
mod wire;
mod writer;

pub use auth::TokenKey;
pub use client::WobblyClient;
pub use sky::SqlImageIndex;
pub use store::SqlJobStore;

/// Errors of opening and migrating a store; per-operation errors are [`uws::UwsError`].
#[derive(Debug, thiserror::Error)]
pub enum WobblyError {
    #[error("cannot open job store {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate job store: {0}")]
    Migrate(sqlx::Error),
}
