//! [`WobblyClient`]: the job store as frontends and workers see it in the distributed topology,
//! an implementation of [`uws::store::JobStore`] over wobbly's HTTP+JSON API.
//!
//! Connection failures and 5xx answers become [`UwsError::Store`] (the frontend answers 503
//! ServiceUnavailable); 404 and 409 answers become the same errors the SQL store gives.
//!
//! An answer can be lost after the service has acted (it died, or the connection broke). A
//! transition or a deletion whose outcome is unknown is repeated, with the same body (the same
//! instant), for [`RETRY_FOR`]; a repeat that the state machine refuses is read back, and counts
//! as done when the job shows exactly this transition (same phase, same instant, same results),
//! so a worker's start or completion is neither lost nor taken for another worker's. Creates are
//! repeated by their caller (`uws::service::Uws::create`), which owns the job ID.

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use uws::store::{
    Created, JobFilter, JobStore, JobSummary, JobUpdate, ListCursor, OwnerUsage, RecentRun,
    Transition,
};
use uws::{ExecutionPhase, Job, JobId, NewJob, UwsError, timestamp};

use crate::api::{
    IdsQuery, JobJson, JobPage, ListQuery, NewJobJson, Problem, QueuedJson, QueuedQuery,
    RecentRunJson, TransitionJson, TransitionRequest, UpdateJson, UsageJson, UsageQuery,
    phase_list,
};
use crate::auth::TokenKey;

/// Lifetime of the tokens the client mints for itself; a fresh one is made per request.
const TOKEN_TTL: u64 = 300;

/// How long a transition or deletion whose answer was lost is repeated.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// A client of the wobbly service for one service's jobs. Cloning shares the connection pool.
#[derive(Clone, Debug)]
pub struct WobblyClient {
    http: reqwest::Client,
    base: String,
    service: String,
    key: TokenKey,
    /// Jobs asked for per list request.
    page_size: u32,
}

fn unavailable(e: impl std::fmt::Display) -> UwsError {
    UwsError::Store(format!("job store service: {e}"))
}

impl WobblyClient {
    pub fn new(base: &str, service: &str, key: TokenKey) -> Result<WobblyClient, UwsError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(unavailable)?;
        Ok(WobblyClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            service: service.to_owned(),
            key,
            page_size: crate::service::MAX_PAGE,
        })
    }

    /// Reads job lists in pages of `size` (at most the service's own page size); smaller pages
    /// let a test cross page boundaries with few jobs.
    pub fn with_page_size(mut self, size: u32) -> WobblyClient {
        self.page_size = size.clamp(1, crate::service::MAX_PAGE);
        self
    }

    fn token(&self) -> Result<String, UwsError> {
        self.key
            .issue(&self.service, None, TOKEN_TTL)
            .map_err(unavailable)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, UwsError> {
        self.send_with_status(request).await.map(|(_, body)| body)
    }

    async fn send_with_status<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, T), UwsError> {
        let response = request
            .bearer_auth(self.token()?)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_success() {
            let body = response.json::<T>().await.map_err(unavailable)?;
            return Ok((status, body));
        }
        match response.json::<Problem>().await {
            Ok(problem) if status.is_client_error() => Err(problem.into_error()),
            Ok(problem) => Err(unavailable(problem.message)),
            Err(_) => Err(unavailable(format!("answered {status}"))),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    /// True when the service and its database answer.
    pub async fn ping(&self) -> bool {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Repeats `attempt` while it fails with a store error (outcome unknown), for [`RETRY_FOR`].
/// Returns the last outcome and whether an earlier attempt was in doubt.
async fn repeated<T, F, Fut>(mut attempt: F) -> (Result<T, UwsError>, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, UwsError>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    let mut in_doubt = false;
    loop {
        match attempt().await {
            Err(UwsError::Store(e)) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "job store answer lost; repeating the request");
                in_doubt = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return (outcome, in_doubt),
        }
    }
}

/// True when `job` shows exactly `transition` made at `at`: the mark an earlier attempt of this
/// very request left when only its answer was lost.
fn shows(job: &Job, transition: &Transition, at: OffsetDateTime) -> bool {
    // The instant travelled as text, at the resolution of the UWS timestamps.
    let at = timestamp::parse(&timestamp::format(at)).ok();
    job.phase == transition.target()
        && match transition {
            Transition::Queue | Transition::Abort => true,
            Transition::Archive => job.results.is_empty(),
            Transition::Start => job.start_time == at,
            Transition::Complete(results) => job.end_time == at && job.results == *results,
            Transition::Fail(error) => job.end_time == at && job.error.as_ref() == Some(error),
        }
}

fn ids(list: Vec<String>) -> Result<Vec<JobId>, UwsError> {
    list.iter().map(|id| JobId::parse(id)).collect()
}

#[async_trait]
impl JobStore for WobblyClient {
    async fn create(&self, job: NewJob) -> Result<Created, UwsError> {
        let body = NewJobJson::from(&job);
        let (status, job): (_, JobJson) = self
            .send_with_status(self.http.post(self.url("/jobs")).json(&body))
            .await?;
        let job = Job::try_from(job)?;
        Ok(if status == reqwest::StatusCode::CREATED {
            Created::New(job)
        } else {
            Created::Existing(job)
        })
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        let got: Result<JobJson, _> = self
            .send(self.http.get(self.url(&format!("/jobs/{id}"))))
            .await;
        match got {
            Ok(job) => Job::try_from(job).map(Some),
            Err(UwsError::JobNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Follows the service's pages until `last` entries or the end of the list.
    async fn list(&self, owner: &str, filter: &JobFilter) -> Result<Vec<JobSummary>, UwsError> {
        let mut jobs = Vec::new();
        let mut page_filter = filter.clone();
        loop {
            let wanted = filter
                .last
                .map(|last| last.saturating_sub(u32::try_from(jobs.len()).unwrap_or(u32::MAX)));
            if wanted == Some(0) {
                return Ok(jobs);
            }
            page_filter.last = Some(wanted.map_or(self.page_size, |w| w.min(self.page_size)));
            let query = ListQuery::new(owner, &page_filter);
            let page: JobPage = self
                .send(self.http.get(self.url("/jobs")).query(&query))
                .await?;
            for entry in page.jobs {
                jobs.push(JobSummary::try_from(entry)?);
            }
            match page.next {
                Some(token) => page_filter.cursor = Some(ListCursor::parse(&token)?),
                None => return Ok(jobs),
            }
        }
    }

    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        at: OffsetDateTime,
    ) -> Result<Job, UwsError> {
        let body = TransitionRequest {
            transition: TransitionJson::from(&transition),
            at: timestamp::format(at),
        };
        let url = self.url(&format!("/jobs/{id}/transition"));
        let (url, body) = (url.as_str(), &body);
        let (outcome, in_doubt) =
            repeated(move || self.send::<JobJson>(self.http.post(url).json(body))).await;
        match outcome {
            Ok(job) => Job::try_from(job),
            Err(refused @ UwsError::IllegalTransition { .. }) if in_doubt => {
                match self.get(id).await? {
                    Some(job) if shows(&job, &transition, at) => Ok(job),
                    _ => Err(refused),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn update(&self, id: &JobId, update: JobUpdate) -> Result<Job, UwsError> {
        let body = UpdateJson::from(&update);
        let job: JobJson = self
            .send(
                self.http
                    .patch(self.url(&format!("/jobs/{id}")))
                    .json(&body),
            )
            .await?;
        Job::try_from(job)
    }

    /// A repeat that finds no job (the lost attempt deleted it) answers None.
    async fn delete(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        let url = self.url(&format!("/jobs/{id}"));
        let url = url.as_str();
        let (got, _) = repeated(move || self.send::<JobJson>(self.http.delete(url))).await;
        match got {
            Ok(job) => Job::try_from(job).map(Some),
            Err(UwsError::JobNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<JobId>, UwsError> {
        let query = IdsQuery {
            phases: None,
            now: Some(timestamp::format(now)),
            limit,
        };
        ids(self
            .send(self.http.get(self.url("/expired")).query(&query))
            .await?)
    }

    async fn results_expired(
        &self,
        ended_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        let query = IdsQuery {
            phases: None,
            now: Some(timestamp::format(ended_before)),
            limit,
        };
        ids(self
            .send(self.http.get(self.url("/results-expired")).query(&query))
            .await?)
    }

    async fn usage(&self, owner: &str, since: OffsetDateTime) -> Result<OwnerUsage, UwsError> {
        let query = UsageQuery {
            owner: owner.to_owned(),
            since: timestamp::format(since),
        };
        let usage: UsageJson = self
            .send(self.http.get(self.url("/usage")).query(&query))
            .await?;
        OwnerUsage::try_from(usage)
    }

    async fn queued_count(&self, owner: &str, cap: u64) -> Result<u64, UwsError> {
        let query = QueuedQuery {
            owner: owner.to_owned(),
            cap,
        };
        let queued: QueuedJson = self
            .send(self.http.get(self.url("/queued")).query(&query))
            .await?;
        Ok(queued.queued)
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RecentRun>, UwsError> {
        let query = IdsQuery {
            phases: None,
            now: None,
            limit,
        };
        let runs: Vec<RecentRunJson> = self
            .send(self.http.get(self.url("/recent-runs")).query(&query))
            .await?;
        Ok(runs.iter().map(RecentRun::from).collect())
    }

    async fn in_phases(
        &self,
        phases: &[ExecutionPhase],
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        let query = IdsQuery {
            phases: Some(phase_list(phases)),
            now: None,
            limit,
        };
        ids(self
            .send(self.http.get(self.url("/active")).query(&query))
            .await?)
    }
}
