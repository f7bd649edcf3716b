//! Per-user quotas, checked before a job is created or started: jobs running at once, jobs
//! queued, jobs created per hour, result bytes held. Over a limit the request gets 429 with a
//! `Retry-After` and nothing is created; counts come from the job store, the truth shared by
//! every frontend.

use std::time::Duration;

use time::OffsetDateTime;
use uws::store::OwnerUsage;

use crate::error::FrontendError;
use crate::state::App;

/// The window of `jobs_per_hour`.
const HOUR: Duration = Duration::from_secs(3600);

/// Seconds a client over the running or queued limit is told to wait: about one cutout.
const RETRY_RUNNING: u64 = 10;

/// Seconds a client over the result-bytes limit is told to wait: space comes back only when
/// the user deletes jobs or they expire, so there is no better estimate.
const RETRY_BYTES: u64 = 300;

/// Per-user limits; `None` is unlimited.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    pub jobs_running: Option<u64>,
    pub jobs_queued: Option<u64>,
    pub jobs_per_hour: Option<u64>,
    pub result_bytes: Option<u64>,
}

impl Quotas {
    fn is_unlimited(&self) -> bool {
        self.jobs_running.is_none()
            && self.jobs_queued.is_none()
            && self.jobs_per_hour.is_none()
            && self.result_bytes.is_none()
    }
}

/// What a request is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Create a PENDING job.
    Create,
    /// Create a job and queue it at once (`PHASE=RUN`, sync).
    CreateAndRun,
    /// Queue an existing PENDING job.
    Run,
}

/// Refuses the request if `owner` is at a limit that `intent` would cross.
pub async fn check(app: &App, owner: &str, intent: Intent) -> Result<(), FrontendError> {
    let quotas = &app.settings.quotas;
    if quotas.is_unlimited() {
        return Ok(());
    }
    let now = uws::timestamp::now();
    let usage = app.uws.store().usage(owner, now - HOUR).await?;
    verdict(quotas, &usage, intent, now)
}

/// What the store checks atomically as it inserts a job of `planned_bytes`: the same limits, so
/// that concurrent creates of one owner cannot all pass [`check`] before any of them is written.
pub fn admission(app: &App, planned_bytes: Option<u64>) -> uws::Admission {
    let quotas = &app.settings.quotas;
    uws::Admission {
        planned_bytes,
        jobs_per_hour: quotas.jobs_per_hour,
        jobs_queued: quotas.jobs_queued,
        result_bytes: quotas.result_bytes,
    }
}

/// The decision, apart from the store so that each boundary is tested directly.
pub fn verdict(
    quotas: &Quotas,
    usage: &OwnerUsage,
    intent: Intent,
    now: OffsetDateTime,
) -> Result<(), FrontendError> {
    let creates = intent != Intent::Run;
    let queues = intent != Intent::Create;
    if creates {
        if let Some(limit) = quotas.jobs_per_hour.filter(|l| usage.created_since >= *l) {
            // The oldest job in the window leaves it an hour after its creation.
            let retry_after = usage
                .oldest_since
                .map(|t| (t + HOUR - now).whole_seconds().clamp(1, 3600))
                .map_or(3600, |s| s.unsigned_abs());
            return Err(over(
                format!("you created {limit} jobs in the last hour, the most allowed"),
                retry_after,
            ));
        }
        if let Some(limit) = quotas.result_bytes.filter(|l| usage.result_bytes >= *l) {
            return Err(over(
                format!(
                    "your results hold {} bytes, at or over the limit of {limit}; delete finished jobs to make room",
                    usage.result_bytes
                ),
                RETRY_BYTES,
            ));
        }
    }
    if queues {
        if let Some(limit) = quotas.jobs_queued.filter(|l| usage.queued >= *l) {
            return Err(over(
                format!(
                    "you have {} jobs queued, the most allowed is {limit}",
                    usage.queued
                ),
                RETRY_RUNNING,
            ));
        }
        if let Some(limit) = quotas.jobs_running.filter(|l| usage.executing >= *l) {
            return Err(over(
                format!(
                    "you have {} jobs running, the most allowed is {limit}",
                    usage.executing
                ),
                RETRY_RUNNING,
            ));
        }
    }
    Ok(())
}

fn over(message: String, retry_after: u64) -> FrontendError {
    FrontendError::OverQuota {
        message: format!("over quota: {message}"),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(limit: u64) -> Quotas {
        Quotas {
            jobs_running: Some(limit),
            jobs_queued: Some(limit),
            jobs_per_hour: Some(limit),
            result_bytes: Some(limit),
        }
    }

    fn retry_after(r: Result<(), FrontendError>) -> Option<u64> {
        match r {
            Err(FrontendError::OverQuota { retry_after, .. }) => Some(retry_after),
            _ => None,
        }
    }

    #[test]
    fn each_limit_refuses_at_its_boundary_and_not_below() {
        let now = uws::timestamp::now();
        let below = OwnerUsage {
            queued: 2,
            executing: 2,
            created_since: 2,
            oldest_since: Some(now),
            result_bytes: 2,
        };
        assert!(verdict(&at(3), &below, Intent::CreateAndRun, now).is_ok());
        let fields: [fn(&mut OwnerUsage); 4] = [
            |u| u.queued = 3,
            |u| u.executing = 3,
            |u| u.created_since = 3,
            |u| u.result_bytes = 3,
        ];
        for set in fields {
            let mut usage = below.clone();
            set(&mut usage);
            assert!(
                verdict(&at(3), &usage, Intent::CreateAndRun, now).is_err(),
                "{usage:?}"
            );
        }
    }

    #[test]
    fn a_pending_job_is_not_held_to_the_queue_limits_nor_a_run_to_the_creation_ones() {
        let now = uws::timestamp::now();
        let busy = OwnerUsage {
            queued: 5,
            executing: 5,
            ..OwnerUsage::default()
        };
        assert!(verdict(&at(5), &busy, Intent::Create, now).is_ok());
        assert!(verdict(&at(5), &busy, Intent::Run, now).is_err());
        let many = OwnerUsage {
            created_since: 5,
            result_bytes: 5,
            oldest_since: Some(now),
            ..OwnerUsage::default()
        };
        assert!(verdict(&at(5), &many, Intent::Run, now).is_ok());
        assert!(verdict(&at(5), &many, Intent::Create, now).is_err());
    }

    #[test]
    fn hourly_retry_after_is_when_the_oldest_job_leaves_the_window() {
        let now = uws::timestamp::now();
        let usage = OwnerUsage {
            created_since: 1,
            oldest_since: Some(now - Duration::from_secs(3000)),
            ..OwnerUsage::default()
        };
        let quotas = Quotas {
            jobs_per_hour: Some(1),
            ..Quotas::default()
        };
        assert_eq!(
            retry_after(verdict(&quotas, &usage, Intent::Create, now)),
            Some(600)
        );
    }
}
