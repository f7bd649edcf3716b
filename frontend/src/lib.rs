//! The public HTTP face of Skycut: SODA 1.0 sync and async cutouts over UWS 1.1, DataLink
//! `{links}` with a SODA service descriptor, SIA 2.0 discovery from the sky index, VOSI availability and capabilities, the OpenAPI
//! description, and the route that serves signed local result URLs.
//!
//! Start at [`router::build`], which lays out the whole URL space on one screen. Every handler is
//! parse → call → render: [`extract`] turns a request into DALI parameters, the caller's identity
//! and the public base URL; [`uws::service::Uws`] does the protocol work; [`error`] is the one
//! place where an error becomes an HTTP status and a DALI label.
//!
//! Architecture invariant: the frontend never touches pixels (the worker cuts) and never stores a
//! signed URL (they are made afresh on each read).

pub mod auth;
pub mod bulk;
pub mod completion;
pub mod cutout;
pub mod datalink;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod jobs;
pub mod openapi;
pub mod origin;
pub mod quota;
pub mod router;
pub mod sia;
pub mod span;
pub mod state;
pub mod sync;
pub mod ui;
pub mod upload;
pub mod vosi;

pub use error::FrontendError;
pub use router::build;
pub use state::{App, AppState, FrontendSettings};
