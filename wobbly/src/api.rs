//! API boundary: the JSON that the wobbly service and its client exchange (version 1, under
//! `/v1`). Only these types are serialised; they convert to and from the `uws` domain types.

use serde::{Deserialize, Serialize};
use uws::store::{JobFilter, JobSummary, JobUpdate, ListCursor, OwnerUsage, RecentRun, Transition};
use uws::{
    ErrorCode, ExecutionPhase, Job, JobError, JobId, JobResult, NewJob, UwsError, timestamp,
};

#[derive(Debug, Serialize, Deserialize)]
pub struct ResultJson {
    pub id: String,
    pub key: String,
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorJson {
    pub code: String,
    pub message: String,
}

/// Instants travel as the UWS text form (UTC, milliseconds) so the JSON stays readable.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobJson {
    pub id: String,
    pub run_id: Option<String>,
    pub owner: String,
    pub phase: String,
    pub quote: Option<String>,
    pub creation_time: String,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub execution_duration: u32,
    pub destruction: String,
    pub parameters: Vec<(String, String)>,
    pub results: Vec<ResultJson>,
    pub error: Option<ErrorJson>,
    /// Bytes the results were planned to take; absent from an older service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_bytes: Option<u64>,
    /// The last progress report ([`uws::Progress::encode`]); absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// `POST /v1/jobs`: answered 201 with the job when it was stored, 200 with the existing job when
/// the same create had already happened (same ID, owner, run ID and parameters), 409 when the
/// ID names another job.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewJobJson {
    /// The job ID the caller drew; absent (an older client), the service draws one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub owner: String,
    pub run_id: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub execution_duration: u32,
    pub destruction: String,
    pub creation_time: String,
    /// Created QUEUED rather than PENDING; absent (an older client) means PENDING.
    #[serde(default)]
    pub queued: bool,
    /// A synchronous request's job, whose writes need not be durable ([`uws::NewJob::sync`]);
    /// absent (an older client) means durable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
    /// The limits the store checks atomically with the insert; absent means none.
    #[serde(default)]
    pub admission: AdmissionJson,
    /// The job's size before it runs ([`uws::NewJob::progress`], [`uws::Progress::encode`]d);
    /// absent when none (and from an older client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// [`uws::Admission`] on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AdmissionJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_queued: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "lowercase")]
pub enum TransitionJson {
    Queue,
    Start,
    Complete { results: Vec<ResultJson> },
    Fail { error: ErrorJson },
    Abort,
    Archive,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransitionRequest {
    pub transition: TransitionJson,
    pub at: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateJson {
    Destruction(String),
    ExecutionDuration(u32),
    Parameters(Vec<(String, String)>),
    RunId(Option<String>),
    /// [`uws::Progress::encode`]d.
    Progress(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub owner: String,
    /// Comma-separated phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The page size (the caller's `LAST`, capped by the service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    /// The `next` token of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One page of the job list; `next` is present when more entries may follow.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<SummaryJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SummaryJson {
    pub id: String,
    pub run_id: Option<String>,
    pub owner: String,
    pub phase: String,
    pub creation_time: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdsQuery {
    /// Comma-separated phases (for `/v1/active`), or the instant (for `/v1/expired`, and the
    /// latest end for `/v1/results-expired`).
    #[serde(default)]
    pub phases: Option<String>,
    #[serde(default)]
    pub now: Option<String>,
    pub limit: u32,
}

/// `GET /v1/recent-runs?limit=N`: run time (seconds) and result bytes of recent COMPLETED jobs.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecentRunJson {
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
}

impl From<&RecentRun> for RecentRunJson {
    fn from(r: &RecentRun) -> Self {
        RecentRunJson {
            seconds: r.run_time.as_secs_f64(),
            result_bytes: r.result_bytes,
        }
    }
}

impl From<&RecentRunJson> for RecentRun {
    fn from(r: &RecentRunJson) -> Self {
        RecentRun {
            run_time: std::time::Duration::try_from_secs_f64(r.seconds).unwrap_or_default(),
            result_bytes: r.result_bytes,
        }
    }
}

/// `GET /v1/queued?owner=…&cap=N`: the owner's QUEUED jobs, counted up to `cap`.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedQuery {
    pub owner: String,
    pub cap: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedJson {
    pub queued: u64,
}

/// `GET /v1/usage`: whose usage, and the start of the creation window.
#[derive(Debug, Serialize, Deserialize)]
pub struct UsageQuery {
    pub owner: String,
    pub since: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsageJson {
    pub queued: u64,
    pub executing: u64,
    pub created_since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_since: Option<String>,
    pub result_bytes: u64,
}

impl From<&OwnerUsage> for UsageJson {
    fn from(u: &OwnerUsage) -> Self {
        UsageJson {
            queued: u.queued,
            executing: u.executing,
            created_since: u.created_since,
            oldest_since: u.oldest_since.map(timestamp::format),
            result_bytes: u.result_bytes,
        }
    }
}

impl TryFrom<UsageJson> for OwnerUsage {
    type Error = UwsError;

    fn try_from(u: UsageJson) -> Result<Self, UwsError> {
        Ok(OwnerUsage {
            queued: u.queued,
            executing: u.executing,
            created_since: u.created_since,
            oldest_since: u
                .oldest_since
                .as_deref()
                .map(timestamp::parse)
                .transpose()?,
            result_bytes: u.result_bytes,
        })
    }
}

/// The body of every error answer, so the client can rebuild the exact [`UwsError`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Problem {
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

fn bad(what: &str) -> UwsError {
    UwsError::Store(format!("malformed {what} from the job store service"))
}

fn time(s: &str) -> Result<time::OffsetDateTime, UwsError> {
    timestamp::parse(s).map_err(|_| bad("time"))
}

fn opt_time(s: &Option<String>) -> Result<Option<time::OffsetDateTime>, UwsError> {
    s.as_deref().map(time).transpose()
}

fn phase(s: &str) -> Result<ExecutionPhase, UwsError> {
    s.parse().map_err(|_| bad("phase"))
}

pub fn phases(list: &str) -> Result<Vec<ExecutionPhase>, UwsError> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

pub fn phase_list(phases: &[ExecutionPhase]) -> String {
    phases
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl From<&JobResult> for ResultJson {
    fn from(r: &JobResult) -> Self {
        ResultJson {
            id: r.id.clone(),
            key: r.key.clone(),
            mime_type: r.mime_type.clone(),
            size: r.size,
        }
    }
}

impl From<ResultJson> for JobResult {
    fn from(r: ResultJson) -> Self {
        JobResult {
            id: r.id,
            key: r.key,
            mime_type: r.mime_type,
            size: r.size,
        }
    }
}

impl From<&JobError> for ErrorJson {
    fn from(e: &JobError) -> Self {
        ErrorJson {
            code: e.code.as_str().to_owned(),
            message: e.message.clone(),
        }
    }
}

impl From<ErrorJson> for JobError {
    fn from(e: ErrorJson) -> Self {
        JobError::new(
            ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Internal),
            e.message,
        )
    }
}

impl From<&Job> for JobJson {
    fn from(j: &Job) -> Self {
        JobJson {
            id: j.id.to_string(),
            run_id: j.run_id.clone(),
            owner: j.owner.clone(),
            phase: j.phase.to_string(),
            quote: j.quote.map(timestamp::format),
            creation_time: timestamp::format(j.creation_time),
            start_time: j.start_time.map(timestamp::format),
            end_time: j.end_time.map(timestamp::format),
            execution_duration: j.execution_duration,
            destruction: timestamp::format(j.destruction),
            parameters: j.parameters.clone(),
            results: j.results.iter().map(ResultJson::from).collect(),
            error: j.error.as_ref().map(ErrorJson::from),
            planned_bytes: j.planned_bytes,
            progress: j.progress.as_ref().map(uws::Progress::encode),
        }
    }
}

impl TryFrom<JobJson> for Job {
    type Error = UwsError;

    fn try_from(j: JobJson) -> Result<Self, UwsError> {
        Ok(Job {
            id: JobId::parse(&j.id).map_err(|_| bad("job id"))?,
            run_id: j.run_id,
            owner: j.owner,
            phase: phase(&j.phase)?,
            quote: opt_time(&j.quote)?,
            creation_time: time(&j.creation_time)?,
            start_time: opt_time(&j.start_time)?,
            end_time: opt_time(&j.end_time)?,
            execution_duration: j.execution_duration,
            destruction: time(&j.destruction)?,
            parameters: j.parameters,
            results: j.results.into_iter().map(JobResult::from).collect(),
            error: j.error.map(JobError::from),
            planned_bytes: j.planned_bytes,
            progress: j.progress.as_deref().and_then(uws::Progress::decode),
        })
    }
}

impl From<&NewJob> for NewJobJson {
    fn from(j: &NewJob) -> Self {
        NewJobJson {
            id: Some(j.id.to_string()),
            owner: j.owner.clone(),
            run_id: j.run_id.clone(),
            parameters: j.parameters.clone(),
            execution_duration: j.execution_duration,
            destruction: timestamp::format(j.destruction),
            creation_time: timestamp::format(j.creation_time),
            queued: j.queued,
            sync: j.sync,
            admission: AdmissionJson {
                planned_bytes: j.admission.planned_bytes,
                jobs_per_hour: j.admission.jobs_per_hour,
                jobs_queued: j.admission.jobs_queued,
                result_bytes: j.admission.result_bytes,
            },
            progress: j.progress.as_ref().map(uws::Progress::encode),
        }
    }
}

impl TryFrom<NewJobJson> for NewJob {
    type Error = UwsError;

    fn try_from(j: NewJobJson) -> Result<Self, UwsError> {
        let id = match j.id.as_deref() {
            Some(id) => {
                JobId::parse(id).map_err(|_| UwsError::Usage(format!("not a job ID: {id:?}")))?
            }
            None => JobId::random(),
        };
        Ok(NewJob {
            id,
            owner: j.owner,
            run_id: j.run_id,
            parameters: j.parameters,
            execution_duration: j.execution_duration,
            destruction: timestamp::parse(&j.destruction)?,
            creation_time: timestamp::parse(&j.creation_time)?,
            queued: j.queued,
            sync: j.sync,
            admission: uws::Admission {
                planned_bytes: j.admission.planned_bytes,
                jobs_per_hour: j.admission.jobs_per_hour,
                jobs_queued: j.admission.jobs_queued,
                result_bytes: j.admission.result_bytes,
            },
            progress: j
                .progress
                .map(|p| uws::Progress::decode(&p).ok_or_else(|| bad("progress")))
                .transpose()?,
        })
    }
}

impl From<&Transition> for TransitionJson {
    fn from(t: &Transition) -> Self {
        match t {
            Transition::Queue => TransitionJson::Queue,
            Transition::Start => TransitionJson::Start,
            Transition::Complete(results) => TransitionJson::Complete {
                results: results.iter().map(ResultJson::from).collect(),
            },
            Transition::Fail(error) => TransitionJson::Fail {
                error: ErrorJson::from(error),
            },
            Transition::Abort => TransitionJson::Abort,
            Transition::Archive => TransitionJson::Archive,
        }
    }
}

impl From<TransitionJson> for Transition {
    fn from(t: TransitionJson) -> Self {
        match t {
            TransitionJson::Queue => Transition::Queue,
            TransitionJson::Start => Transition::Start,
            TransitionJson::Complete { results } => {
                Transition::Complete(results.into_iter().map(JobResult::from).collect())
            }
            TransitionJson::Fail { error } => Transition::Fail(JobError::from(error)),
            TransitionJson::Abort => Transition::Abort,
            TransitionJson::Archive => Transition::Archive,
        }
    }
}

impl From<&JobUpdate> for UpdateJson {
    fn from(u: &JobUpdate) -> Self {
        match u {
            JobUpdate::Destruction(t) => UpdateJson::Destruction(timestamp::format(*t)),
            JobUpdate::ExecutionDuration(s) => UpdateJson::ExecutionDuration(*s),
            JobUpdate::Parameters(p) => UpdateJson::Parameters(p.clone()),
            JobUpdate::RunId(r) => UpdateJson::RunId(r.clone()),
            JobUpdate::Progress(p) => UpdateJson::Progress(p.encode()),
        }
    }
}

impl TryFrom<UpdateJson> for JobUpdate {
    type Error = UwsError;

    fn try_from(u: UpdateJson) -> Result<Self, UwsError> {
        Ok(match u {
            UpdateJson::Destruction(t) => JobUpdate::Destruction(timestamp::parse(&t)?),
            UpdateJson::ExecutionDuration(s) => JobUpdate::ExecutionDuration(s),
            UpdateJson::Parameters(p) => JobUpdate::Parameters(p),
            UpdateJson::RunId(r) => JobUpdate::RunId(r),
            UpdateJson::Progress(p) => {
                JobUpdate::Progress(uws::Progress::decode(&p).ok_or_else(|| bad("progress"))?)
            }
        })
    }
}

impl From<&JobSummary> for SummaryJson {
    fn from(s: &JobSummary) -> Self {
        SummaryJson {
            id: s.id.to_string(),
            run_id: s.run_id.clone(),
            owner: s.owner.clone(),
            phase: s.phase.to_string(),
            creation_time: timestamp::format(s.creation_time),
        }
    }
}

impl TryFrom<SummaryJson> for JobSummary {
    type Error = UwsError;

    fn try_from(s: SummaryJson) -> Result<Self, UwsError> {
        Ok(JobSummary {
            id: JobId::parse(&s.id).map_err(|_| bad("job id"))?,
            run_id: s.run_id,
            owner: s.owner,
            phase: phase(&s.phase)?,
            creation_time: time(&s.creation_time)?,
        })
    }
}

impl ListQuery {
    pub fn new(owner: &str, filter: &JobFilter) -> ListQuery {
        ListQuery {
            owner: owner.to_owned(),
            phases: (!filter.phases.is_empty()).then(|| phase_list(&filter.phases)),
            after: filter.after.map(timestamp::format),
            last: filter.last,
            cursor: filter.cursor.as_ref().map(ListCursor::token),
        }
    }

    pub fn filter(&self) -> Result<JobFilter, UwsError> {
        Ok(JobFilter {
            phases: self
                .phases
                .as_deref()
                .map(phases)
                .transpose()?
                .unwrap_or_default(),
            after: self.after.as_deref().map(timestamp::parse).transpose()?,
            last: self.last,
            cursor: self.cursor.as_deref().map(ListCursor::parse).transpose()?,
        })
    }
}

impl Problem {
    pub fn from_error(e: &UwsError) -> Problem {
        let mut p = Problem {
            kind: String::new(),
            message: e.to_string(),
            id: None,
            from: None,
            to: None,
        };
        match e {
            UwsError::JobNotFound(id) => {
                p.kind = "not-found".into();
                p.id = Some(id.clone());
            }
            UwsError::IllegalTransition { id, from, to } => {
                p.kind = "illegal-transition".into();
                p.id = Some(id.clone());
                p.from = Some(from.to_string());
                p.to = Some(to.to_string());
            }
            UwsError::WrongPhase { id, phase, what } => {
                p.kind = "wrong-phase".into();
                p.id = Some(id.clone());
                p.from = Some(phase.to_string());
                p.message = what.clone();
            }
            UwsError::Usage(m) => {
                p.kind = "usage".into();
                p.message = m.clone();
            }
            UwsError::Conflict(m) => {
                p.kind = "conflict".into();
                p.message = m.clone();
            }
            UwsError::OverQuota(m) => {
                p.kind = "over-quota".into();
                p.message = m.clone();
            }
            UwsError::ResourceNotFound(_)
            | UwsError::Store(_)
            | UwsError::Queue(_)
            | UwsError::ResultStore(_) => p.kind = "store".into(),
        }
        p
    }

    pub fn into_error(self) -> UwsError {
        let id = self.id.unwrap_or_default();
        let from = self.from.as_deref().and_then(|p| p.parse().ok());
        let to = self.to.as_deref().and_then(|p| p.parse().ok());
        match (self.kind.as_str(), from, to) {
            ("not-found", _, _) => UwsError::JobNotFound(id),
            ("illegal-transition", Some(from), Some(to)) => {
                UwsError::IllegalTransition { id, from, to }
            }
            ("wrong-phase", Some(phase), _) => UwsError::WrongPhase {
                id,
                phase,
                what: self.message,
            },
            ("usage", _, _) => UwsError::Usage(self.message),
            ("conflict", _, _) => UwsError::Conflict(self.message),
            ("over-quota", _, _) => UwsError::OverQuota(self.message),
            _ => UwsError::Store(self.message),
        }
    }
}
