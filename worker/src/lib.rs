//! Cutout workers: take a job from the queue, cut its images, store the results, and record each
//! phase in the job store.
//!
//! [`runner::Worker::run_job`] is one job from QUEUED to a final phase; `cutouts` turns a job's
//! (ID, stencil) pairs into its results; [`local`] is the in-process queue of `skycut serve` and
//! the loop that feeds jobs from it to a worker, many at once; [`redis`], [`redis_events`] and
//! [`distributed`] are the same for `skycut worker` on Redis Streams and pub/sub, with reclaim of
//! jobs from dead workers and a drain on shutdown. The FITS work runs on blocking threads so that
//! a slow image never stalls the others. [`sources`] turns an image ID into a local file,
//! through the bucket source cache when the image lives in a bucket, or (`ranged`) as a sparse
//! local copy holding only the headers and the rows one cutout reads.
//!
//! Architecture invariant: a worker never talks HTTP to clients and never trusts a queue message
//! beyond the job ID in it; the job store says what to do and refuses late or duplicate phase
//! changes.

mod cutouts;
pub mod distributed;
pub mod local;
mod ranged;
pub mod redis;
pub mod redis_events;
pub mod runner;
mod shards;
pub mod slots;
pub mod sources;
mod stamps;

pub use local::{LocalQueue, LocalQueueReceiver, run_local};
pub use runner::{Outcome, Worker, WorkerSettings};
pub use shards::ShardLimits;
pub use slots::Slots;
