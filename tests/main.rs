//! End-to-end suites: each test starts `skycut serve` as a real process on a free port with its
//! own data directory and talks HTTP to it. One test binary, so the workspace links once.

mod common;

mod async_jobs;
mod buckets;
mod datalink;
mod events;
mod faults;
mod logs;
mod many_cutouts;
mod openapi;
mod ops;
mod sync;
mod tidy;
mod vosi;
mod wobbly;
