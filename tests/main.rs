//! End-to-end suites: each test starts `skycut serve` as a real process on a free port with its
//! own data directory and talks HTTP to it. One test binary, so the workspace links once.

mod common;

mod async_jobs;
mod auth;
mod buckets;
mod bulk;
mod cli;
mod cubes;
mod datalink;
mod delegated;
mod events;
mod exactly_once;
mod fair_share;
mod faults;
mod hardening;
mod hostile;
mod logs;
mod many_cutouts;
mod ops;
mod previews;
mod quotas;
mod ranges;
mod sia;
mod sync;
mod tidy;
mod time_and_pol;
mod ui;
mod vosi;
mod wobbly;
