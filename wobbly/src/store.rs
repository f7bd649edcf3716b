//! [`SqlJobStore`]: every [`JobStore`] operation as one SQL statement (or two), identical for
//! PostgreSQL and SQLite.
//!
//! Instants are stored as microseconds since the epoch (`BIGINT`) so both databases compare and
//! sort them the same way; parameters and results are JSON in `TEXT` columns.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use time::OffsetDateTime;
use uws::store::{
    Created, JobFilter, JobStore, JobSummary, JobUpdate, OwnerUsage, RecentRun, Transition,
};
use uws::{
    ErrorCode, ExecutionPhase, Job, JobError, JobId, JobResult, NewJob, UwsError, timestamp,
};

use crate::WobblyError;
use crate::schema::MIGRATIONS;
use crate::sync_jobs::SyncJobs;
use crate::wire::{StoredParameter, StoredResult};
use crate::writer::{Bind, SqliteWriter, Write};

const COLUMNS: &str = "id, owner, run_id, phase, quote, creation_time, start_time, end_time, \
     execution_duration, destruction, parameters, results, error_code, error_message, planned_bytes, \
     progress";

/// The window of the `jobs_per_hour` limit, in microseconds: ledger entries older than this
/// before a new job's creation are pruned when it is admitted.
const HOUR_MICROS: i64 = 3600 * 1_000_000;

/// The phases in which a job's planned bytes are reserved against the owner's `result_bytes`.
const RESERVING: &str = "'PENDING', 'QUEUED', 'EXECUTING', 'HELD', 'SUSPENDED'";

/// The job store over one connection pool. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqlJobStore {
    pool: AnyPool,
    /// Jobs are scoped by the service that owns them, so one database serves several services.
    service: String,
    is_sqlite: bool,
    /// SQLite only: the one connection that writes (see [`crate::writer`]).
    writer: Option<SqliteWriter>,
    /// PostgreSQL only: connections with `synchronous_commit = off`, for the writes that need
    /// not be durable (they return without waiting for the WAL flush; a crash can lose the
    /// last of them, never corrupt anything). Opened lazily.
    volatile_pool: Option<AnyPool>,
    /// Synchronous requests' jobs created here and not yet final: their writes are not durable
    /// ([`NewJob::sync`]), and their QUEUED ↔ EXECUTING is held here rather than written (see
    /// [`crate::sync_jobs`]). In memory only, so after a restart, or through another process,
    /// every write of a job is durable again (never less safe than asked).
    sync_jobs: std::sync::Arc<std::sync::Mutex<SyncJobs>>,
    /// How many migrations [`SqlJobStore::connect`] applied (0: the schema was up to date).
    migrations_applied: usize,
}

/// How long an operation waits for a database connection before failing.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl SqlJobStore {
    /// The answer to a create whose ID exists: the same create (owner, run ID and parameters)
    /// repeated answers the job as it is now; anything else is a conflict. A job of another
    /// service sharing the database is a conflict too, and tells this service nothing about it.
    fn repeat_or_conflict(
        existing: Job,
        (owner, run_id, parameters): &(String, Option<String>, Vec<(String, String)>),
    ) -> Result<Created, UwsError> {
        if existing.owner == *owner
            && existing.run_id == *run_id
            && existing.parameters == *parameters
        {
            Ok(Created::Existing(existing))
        } else {
            Err(Self::taken(&existing.id))
        }
    }

    fn taken(id: &JobId) -> UwsError {
        UwsError::Conflict(format!("job {id} already exists with other parameters"))
    }

    /// Whether any service sharing the database has a job with this ID.
    async fn id_taken(&self, id: &JobId) -> Result<bool, UwsError> {
        let row = sqlx::query("SELECT 1 FROM uws_job WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(row.is_some())
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`) and applies pending migrations.
    pub async fn connect(
        url: &str,
        service: &str,
        max_connections: u32,
    ) -> Result<SqlJobStore, WobblyError> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            // A database that is down must give a prompt 503, not a request hung for sqlx's
            // default 30 s while it retries the connection.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|source| WobblyError::Connect {
                url: redact(url),
                source,
            })?;
        if is_sqlite {
            // Readers must not wait for the writer: WAL lets the frontend list jobs while a
            // worker records a result.
            sqlx::raw_sql("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(WobblyError::Migrate)?;
        }
        let writer = is_sqlite.then(|| SqliteWriter::start(pool.clone()));
        let volatile_pool = match is_sqlite {
            true => None,
            false => Some(
                AnyPoolOptions::new()
                    .max_connections(max_connections.div_ceil(2))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::raw_sql("SET synchronous_commit = off")
                                .execute(conn)
                                .await
                                .map(drop)
                        })
                    })
                    .connect_lazy(url)
                    .map_err(|source| WobblyError::Connect {
                        url: redact(url),
                        source,
                    })?,
            ),
        };
        let mut store = SqlJobStore {
            pool,
            service: service.to_owned(),
            is_sqlite,
            writer,
            volatile_pool,
            sync_jobs: std::sync::Arc::default(),
            migrations_applied: 0,
        };
        store.migrations_applied = store.migrate().await?;
        Ok(store)
    }

    /// How many migrations opening this store applied; 0 when its schema was already current.
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    /// Applies the migrations that have not run yet, in one transaction. On PostgreSQL an
    /// advisory lock makes processes that start together (frontends, workers, `skycut migrate`)
    /// migrate one after the other instead of racing on `CREATE TABLE`.
    /// Returns how many it applied.
    pub async fn migrate(&self) -> Result<usize, WobblyError> {
        let mut tx = self.pool.begin().await.map_err(WobblyError::Migrate)?;
        if !self.is_sqlite {
            sqlx::query("SELECT pg_advisory_xact_lock(7271208)")
                .execute(&mut *tx)
                .await
                .map_err(WobblyError::Migrate)?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS wobbly_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(WobblyError::Migrate)?;
        let mut applied = 0;
        for (version, name, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM wobbly_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(WobblyError::Migrate)?;
            if done.is_some() {
                continue;
            }
            applied += 1;
            tracing::info!(version, name, "applying job store migration");
            sqlx::raw_sql(AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(WobblyError::Migrate)?;
            sqlx::query("INSERT INTO wobbly_migrations (version, name) VALUES ($1, $2)")
                .bind(*version)
                .bind(*name)
                .execute(&mut *tx)
                .await
                .map_err(WobblyError::Migrate)?;
            tracing::info!(version, name, "job store migrated");
        }
        tx.commit().await.map_err(WobblyError::Migrate)?;
        Ok(applied)
    }

    /// The same database, for another service's jobs.
    pub fn for_service(&self, service: &str) -> SqlJobStore {
        SqlJobStore {
            pool: self.pool.clone(),
            service: service.to_owned(),
            is_sqlite: self.is_sqlite,
            writer: self.writer.clone(),
            volatile_pool: self.volatile_pool.clone(),
            sync_jobs: self.sync_jobs.clone(),
            migrations_applied: 0,
        }
    }

    /// The pool for a write on PostgreSQL: one that does not wait for the WAL flush when the
    /// write need not be durable.
    fn pool_for(&self, write: &Write) -> &AnyPool {
        match (&self.volatile_pool, write.durable) {
            (Some(volatile), false) => volatile,
            _ => &self.pool,
        }
    }

    /// Runs `f` on the sync jobs held here; `None` if a panic poisoned them (then every write
    /// goes to the row, durably, as for a job created elsewhere).
    fn sync_jobs<T>(&self, f: impl FnOnce(&mut SyncJobs) -> T) -> Option<T> {
        self.sync_jobs.lock().ok().map(|mut jobs| f(&mut jobs))
    }

    /// Whether `id` is a synchronous request's job created here and not yet final.
    fn is_sync(&self, id: &JobId) -> bool {
        self.sync_jobs(|jobs| jobs.contains(id)).unwrap_or(false)
    }

    fn forget_sync(&self, id: &JobId) {
        self.sync_jobs(|jobs| jobs.forget(id));
    }

    /// Notes a synchronous request's job that this store created, so its transitions are not
    /// made durable either, and it can begin in memory.
    fn created(&self, job: Job, sync: bool) -> Created {
        if sync {
            self.sync_jobs(|jobs| jobs.created(job.clone(), std::time::Instant::now()));
        }
        Created::New(job)
    }

    /// A job as a write answered it, told to the sync jobs held here and seen through them.
    fn written(&self, job: Job) -> Job {
        let seen = self.sync_jobs(|jobs| {
            jobs.written(&job);
            jobs.read(job.clone())
        });
        seen.unwrap_or(job)
    }

    /// A sync job's QUEUED ↔ EXECUTING done in memory, when this store holds the job's phase
    /// (see [`crate::sync_jobs`]); `None` when its row decides.
    fn move_in_memory(
        &self,
        id: &JobId,
        transition: &Transition,
        at: OffsetDateTime,
    ) -> Option<Result<Job, UwsError>> {
        let moved = self.sync_jobs(|jobs| match transition {
            Transition::Start => jobs.begin(id, at),
            Transition::Queue => jobs.hand_back(id),
            _ => None,
        })??;
        Some(match moved {
            Ok(job) => Ok(job),
            Err(from) => Err(UwsError::IllegalTransition {
                id: id.to_string(),
                from,
                to: transition.target(),
            }),
        })
    }

    /// Applies a statement that writes: through the writer on SQLite, on the pool otherwise
    /// (PostgreSQL takes concurrent writers and commits each durably, unless the write need
    /// not be).
    async fn write(&self, write: Write) -> Result<Option<AnyRow>, UwsError> {
        match &self.writer {
            Some(writer) => writer.write(write).await,
            None => {
                let mut conn = self.pool_for(&write).acquire().await.map_err(store_error)?;
                if write.then.is_empty() {
                    write.fetch_optional(&mut conn).await.map_err(store_error)
                } else {
                    let mut tx = sqlx::Connection::begin(&mut *conn)
                        .await
                        .map_err(store_error)?;
                    let row = write.fetch_optional(&mut tx).await.map_err(store_error)?;
                    tx.commit().await.map_err(store_error)?;
                    Ok(row)
                }
            }
        }
    }

    /// Applies `write` with no other write of `owner`'s jobs in between: on SQLite every write
    /// goes through the one writer connection anyway; on PostgreSQL the transaction first takes
    /// an advisory lock on the owner, so that each statement after it sees the rows the previous
    /// holder wrote.
    async fn write_serialised(
        &self,
        owner: &str,
        write: Write,
    ) -> Result<Option<AnyRow>, UwsError> {
        if self.writer.is_some() {
            return self.write(write).await;
        }
        let mut tx = self.pool_for(&write).begin().await.map_err(store_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("skycut-owner/{}/{owner}", self.service))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let row = write.fetch_optional(&mut tx).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(row)
    }

    /// Why a create was refused: the first limit of `admission` the owner is at.
    async fn refusal(
        &self,
        owner: &str,
        admission: &uws::Admission,
        queued: bool,
        now: OffsetDateTime,
    ) -> UwsError {
        let usage = match self
            .usage(owner, now - std::time::Duration::from_secs(3600))
            .await
        {
            Ok(usage) => usage,
            Err(e) => return e,
        };
        if let Some(limit) = admission
            .jobs_per_hour
            .filter(|l| usage.created_since >= *l)
        {
            return UwsError::OverQuota(format!(
                "you created {} jobs in the last hour, the most allowed is {limit}",
                usage.created_since
            ));
        }
        if let Some(limit) = admission
            .jobs_queued
            .filter(|l| queued && usage.queued >= *l)
        {
            return UwsError::OverQuota(format!(
                "you have {} jobs queued, the most allowed is {limit}",
                usage.queued
            ));
        }
        match admission.result_bytes {
            Some(limit) => UwsError::OverQuota(format!(
                "your results and the results planned for your unfinished jobs take {} bytes, \
                 at or over the limit of {limit}; delete finished jobs to make room",
                usage.result_bytes
            )),
            None => UwsError::OverQuota("a limit was reached".to_owned()),
        }
    }

    /// The sky index in the same database, sharing the pool (and, on SQLite, the writer).
    pub fn sky_index(&self) -> crate::SqlImageIndex {
        crate::SqlImageIndex {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
        }
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .is_ok()
    }
}

#[async_trait]
impl JobStore for SqlJobStore {
    /// One `INSERT … ON CONFLICT (id) DO NOTHING RETURNING`: no row back means the ID exists,
    /// and the existing row decides between a repeat of this create and a conflict.
    async fn create(&self, job: NewJob) -> Result<Created, UwsError> {
        let id = job.id.clone();
        let parameters = encode_parameters(&job.parameters)?;
        let admission = job.admission;
        let as_int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let planned = admission.planned_bytes.map(as_int);
        let creation = timestamp::to_micros(job.creation_time);
        let owner = job.owner.clone();
        let sync = job.sync;
        let progress = Bind::OptText(job.progress.as_ref().map(uws::Progress::encode));
        let repeat = (
            job.owner.clone(),
            job.run_id.clone(),
            job.parameters.clone(),
        );
        let mut binds = vec![
            Bind::Text(id.as_str().to_owned()),
            Bind::Text(self.service.clone()),
            Bind::Text(job.owner),
            Bind::OptText(job.run_id),
            Bind::Int(creation),
            Bind::Int(i64::from(job.execution_duration)),
            Bind::Int(timestamp::to_micros(job.destruction)),
            Bind::Text(parameters),
            Bind::Text(
                if job.queued {
                    ExecutionPhase::Queued
                } else {
                    ExecutionPhase::Pending
                }
                .as_str()
                .to_owned(),
            ),
            Bind::OptInt(planned),
        ];
        if admission.is_unlimited() {
            binds.push(progress);
            let sql = format!(
                "INSERT INTO uws_job (id, service, owner, run_id, phase, creation_time, execution_duration, \
                 destruction, parameters, results, planned_bytes, progress) \
                 VALUES ($1, $2, $3, $4, $9, $5, $6, $7, $8, '[]', $10, $11) \
                 ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
            );
            let row = self
                .write(Write {
                    sql,
                    binds,
                    // The client is told the job exists (303 to it) as soon as this returns;
                    // a sync client is told nothing until the job is final.
                    durable: !sync,
                    then: Vec::new(),
                })
                .await?;
            if let Some(row) = row {
                return decode_job(&row).map(|job| self.created(job, sync));
            }
            // No row back: the ID exists, and that row makes this a repeat or a conflict.
            return match self.get(&id).await? {
                Some(existing) => Self::repeat_or_conflict(existing, &repeat),
                // The ID is another service's job (IDs are unique across services sharing the
                // database), and this service must learn nothing about it.
                None => Err(Self::taken(&id)),
            };
        }
        // A repeat of a create that already happened is answered before any limit is counted:
        // the first attempt was admitted, and counting it again could refuse its own repeat.
        if let Some(existing) = self.get(&id).await? {
            return Self::repeat_or_conflict(existing, &repeat);
        }
        // One statement inserts the job only while the owner is under every limit; -1 is no
        // limit. Serialised per owner (write_serialised), so no concurrent create of the same
        // owner can pass the same counts.
        let limit = |v: Option<u64>| v.map_or(-1, as_int);
        binds.extend([
            Bind::Int(limit(admission.jobs_per_hour)),
            Bind::Int(creation - HOUR_MICROS),
            Bind::Int(if job.queued {
                limit(admission.jobs_queued)
            } else {
                -1
            }),
            Bind::Int(limit(admission.result_bytes)),
            progress,
        ]);
        let sql = format!(
            "INSERT INTO uws_job (id, service, owner, run_id, phase, creation_time, execution_duration, \
             destruction, parameters, results, planned_bytes, progress) \
             SELECT $1, $2, $3, $4, $9, $5, $6, $7, $8, '[]', $10, $15 \
             WHERE ($11 < 0 OR (SELECT COUNT(*) FROM uws_job_creation \
                 WHERE service = $2 AND owner = $3 AND creation_time > $12) < $11) \
             AND ($13 < 0 OR (SELECT COUNT(*) FROM uws_job \
                 WHERE service = $2 AND owner = $3 AND phase = 'QUEUED') < $13) \
             AND ($14 < 0 OR (SELECT COALESCE(SUM(CASE WHEN phase = 'COMPLETED' THEN result_bytes \
                 WHEN phase IN ({RESERVING}) THEN planned_bytes END), 0) \
                 FROM uws_job WHERE service = $2 AND owner = $3) < $14) \
             ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
        );
        let then = if admission.jobs_per_hour.is_some() {
            vec![
                (
                    "INSERT INTO uws_job_creation (service, owner, creation_time) \
                     VALUES ($1, $2, $3)"
                        .to_owned(),
                    vec![
                        Bind::Text(self.service.clone()),
                        Bind::Text(owner.clone()),
                        Bind::Int(creation),
                    ],
                ),
                (
                    "DELETE FROM uws_job_creation \
                     WHERE service = $1 AND owner = $2 AND creation_time <= $3"
                        .to_owned(),
                    vec![
                        Bind::Text(self.service.clone()),
                        Bind::Text(owner.clone()),
                        Bind::Int(creation - HOUR_MICROS),
                    ],
                ),
            ]
        } else {
            Vec::new()
        };
        let row = self
            .write_serialised(
                &owner,
                Write {
                    sql,
                    binds,
                    durable: !sync,
                    then,
                },
            )
            .await?;
        if let Some(row) = row {
            return decode_job(&row).map(|job| self.created(job, sync));
        }
        // No row: the ID exists (a concurrent repeat of this create), or a limit refused it.
        match self.get(&id).await? {
            Some(existing) => Self::repeat_or_conflict(existing, &repeat),
            None if self.id_taken(&id).await? => Err(Self::taken(&id)),
            None => Err(self
                .refusal(&owner, &admission, job.queued, job.creation_time)
                .await),
        }
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        let sql = format!("SELECT {COLUMNS} FROM uws_job WHERE id = $1 AND service = $2");
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(id.as_str())
            .bind(self.service.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .as_ref()
            .map(|row| {
                let job = decode_job(row)?;
                Ok(self.sync_jobs(|jobs| jobs.read(job.clone())).unwrap_or(job))
            })
            .transpose()
    }

    async fn list(&self, owner: &str, filter: &JobFilter) -> Result<Vec<JobSummary>, UwsError> {
        let mut sql = String::from(
            "SELECT id, run_id, owner, phase, creation_time FROM uws_job \
             WHERE service = $1 AND owner = $2 AND creation_time > $3",
        );
        if !filter.phases.is_empty() {
            sql.push_str(" AND phase IN (");
            sql.push_str(&phase_list(filter.phases.iter().copied()));
            sql.push(')');
        }
        if filter.cursor.is_some() {
            // A row-value comparison, so both databases walk the owner index from the cursor.
            sql.push_str(" AND (creation_time, id) < ($5, $6)");
        }
        sql.push_str(" ORDER BY creation_time DESC, id DESC LIMIT $4");
        let after = filter.after.map_or(i64::MIN, timestamp::to_micros);
        let limit = filter.last.map_or(i64::MAX, i64::from);
        let mut query = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(self.service.as_str())
            .bind(owner)
            .bind(after)
            .bind(limit);
        if let Some(cursor) = &filter.cursor {
            query = query
                .bind(timestamp::to_micros(cursor.creation_time))
                .bind(cursor.id.as_str().to_owned());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(store_error)?;
        let held = self.sync_jobs.lock().ok();
        rows.iter()
            .map(|row| {
                let id = decode_id(row)?;
                let phase = decode_phase(row)?;
                Ok(JobSummary {
                    phase: held
                        .as_ref()
                        .map_or(phase, |jobs| jobs.listed_phase(&id, phase)),
                    id,
                    run_id: row.try_get("run_id").map_err(store_error)?,
                    owner: row.try_get("owner").map_err(store_error)?,
                    creation_time: timestamp::from_micros(
                        row.try_get("creation_time").map_err(store_error)?,
                    ),
                })
            })
            .collect()
    }

    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        at: OffsetDateTime,
    ) -> Result<Job, UwsError> {
        if let Some(answer) = self.move_in_memory(id, &transition, at) {
            return answer;
        }
        let target = transition.target();
        // A sync job running in memory has a QUEUED row: its final write accepts that, and
        // gives the row the start time held here.
        let started = match target.is_final() {
            true => self.sync_jobs(|jobs| jobs.started(id)).flatten(),
            false => None,
        };
        let from = phase_list(ExecutionPhase::ALL.into_iter().filter(|p| {
            p.can_become(target) || (started.is_some() && *p == ExecutionPhase::Queued)
        }));
        let at = timestamp::to_micros(at);
        // $1 is always the new phase; the data columns follow; id and service come last.
        let (set, mut data): (&str, Vec<Bind>) = match &transition {
            Transition::Queue => ("", vec![]),
            Transition::Start => (", start_time = $2", vec![Bind::Int(at)]),
            Transition::Complete(results) => (
                ", results = $2, end_time = $3, result_bytes = $4",
                vec![
                    Bind::Text(encode_results(results)?),
                    Bind::Int(at),
                    Bind::Int(result_bytes(results)),
                ],
            ),
            Transition::Fail(error) => (
                ", error_code = $2, error_message = $3, end_time = $4",
                vec![
                    Bind::Text(error.code.as_str().to_owned()),
                    Bind::Text(error.message.clone()),
                    Bind::Int(at),
                ],
            ),
            Transition::Abort => (", end_time = $2", vec![Bind::Int(at)]),
            Transition::Archive => (
                ", results = $2, result_bytes = $3",
                vec![Bind::Text(encode_results(&[])?), Bind::Int(0)],
            ),
        };
        let mut set = set.to_owned();
        if let Some(start) = started {
            data.push(Bind::Int(timestamp::to_micros(start)));
            set.push_str(&format!(", start_time = ${}", data.len() + 1));
        }
        let n = data.len();
        let sql = format!(
            "UPDATE uws_job SET phase = $1{set} WHERE id = ${} AND service = ${} AND phase IN ({from}) \
             RETURNING {COLUMNS}",
            n + 2,
            n + 3
        );
        let mut binds = Vec::with_capacity(n + 3);
        binds.push(Bind::Text(target.as_str().to_owned()));
        binds.extend(data);
        binds.push(Bind::Text(id.as_str().to_owned()));
        binds.push(Bind::Text(self.service.clone()));
        let sync = self.is_sync(id);
        let row = self
            .write(Write {
                sql,
                binds,
                // EXECUTING need not survive a power failure: a job that loses it is QUEUED
                // again, and a restart re-queues QUEUED and EXECUTING jobs alike (as a takeover
                // does), so nothing a client was told is lost. Every other phase is something
                // a client may act on (QUEUED after PHASE=RUN, the final phases and their
                // results) and is on disk before anyone hears of it, except a synchronous
                // request's: its client hears only through the open connection.
                durable: !matches!(transition, Transition::Start) && !sync,
                then: Vec::new(),
            })
            .await?;
        match row {
            Some(row) => Ok(self.written(decode_job(&row)?)),
            None => match self.get(id).await? {
                Some(job) => Err(UwsError::IllegalTransition {
                    id: id.to_string(),
                    from: job.phase,
                    to: target,
                }),
                None => Err(UwsError::JobNotFound(id.to_string())),
            },
        }
    }

    async fn update(&self, id: &JobId, update: JobUpdate) -> Result<Job, UwsError> {
        let (sql, bind, pending_only) = match update {
            JobUpdate::Destruction(t) => (
                "destruction = $1",
                Bind::Int(timestamp::to_micros(t)),
                false,
            ),
            JobUpdate::ExecutionDuration(s) => {
                ("execution_duration = $1", Bind::Int(i64::from(s)), true)
            }
            JobUpdate::Parameters(p) => {
                ("parameters = $1", Bind::Text(encode_parameters(&p)?), true)
            }
            JobUpdate::RunId(r) => ("run_id = $1", Bind::OptText(r), true),
            JobUpdate::Progress(p) => ("progress = $1", Bind::Text(p.encode()), false),
        };
        let reporting = sql.starts_with("progress");
        // A sync job running in memory (see `crate::sync_jobs`) is written EXECUTING with its
        // report: its row is QUEUED, and holds the phase from now on.
        let started = match reporting {
            true => self.sync_jobs(|jobs| jobs.started(id)).flatten(),
            false => None,
        };
        let mut binds = vec![
            bind,
            Bind::Text(id.as_str().to_owned()),
            Bind::Text(self.service.clone()),
        ];
        let (sql, guard) = match started {
            Some(start) => {
                binds.push(Bind::Int(timestamp::to_micros(start)));
                (
                    format!("{sql}, phase = 'EXECUTING', start_time = $4"),
                    " AND phase IN ('EXECUTING', 'QUEUED')",
                )
            }
            None if pending_only => (sql.to_owned(), " AND phase = 'PENDING'"),
            None if reporting => (sql.to_owned(), " AND phase = 'EXECUTING'"),
            None => (sql.to_owned(), ""),
        };
        let sql = format!(
            "UPDATE uws_job SET {sql} WHERE id = $2 AND service = $3{guard} RETURNING {COLUMNS}"
        );
        let row = self
            .write(Write {
                sql,
                binds,
                // A progress report lost in a crash is only a stale count.
                durable: !reporting,
                then: Vec::new(),
            })
            .await?;
        match row {
            Some(row) => Ok(self.written(decode_job(&row)?)),
            None => match self.get(id).await? {
                Some(job) => Err(UwsError::WrongPhase {
                    id: id.to_string(),
                    phase: job.phase,
                    what: if reporting {
                        "progress is reported only while EXECUTING".into()
                    } else {
                        "this can only be changed while PENDING".into()
                    },
                }),
                None => Err(UwsError::JobNotFound(id.to_string())),
            },
        }
    }

    async fn delete(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        self.forget_sync(id);
        let sql = format!("DELETE FROM uws_job WHERE id = $1 AND service = $2 RETURNING {COLUMNS}");
        self.write(Write {
            sql,
            binds: vec![
                Bind::Text(id.as_str().to_owned()),
                Bind::Text(self.service.clone()),
            ],
            durable: true,
            then: Vec::new(),
        })
        .await?
        .as_ref()
        .map(decode_job)
        .transpose()
    }

    async fn expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<JobId>, UwsError> {
        let rows = sqlx::query(
            "SELECT id FROM uws_job WHERE service = $1 AND destruction <= $2 ORDER BY destruction LIMIT $3",
        )
        .bind(self.service.as_str())
        .bind(timestamp::to_micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(decode_id).collect()
    }

    async fn results_expired(
        &self,
        ended_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        // The partial index of migration 8 holds exactly these rows, by end time.
        let rows = sqlx::query(
            "SELECT id FROM uws_job WHERE service = $1 AND phase = 'COMPLETED' AND end_time <= $2 \
             ORDER BY end_time LIMIT $3",
        )
        .bind(self.service.as_str())
        .bind(timestamp::to_micros(ended_before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter().map(decode_id).collect()
    }

    async fn usage(&self, owner: &str, since: OffsetDateTime) -> Result<OwnerUsage, UwsError> {
        // One pass over the owner's rows of the owner index. The casts make SUM an integer in
        // PostgreSQL too (it would be NUMERIC there).
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN phase = 'QUEUED' THEN 1 ELSE 0 END), 0) AS BIGINT) AS queued, \
             CAST(COALESCE(SUM(CASE WHEN phase = 'EXECUTING' THEN 1 ELSE 0 END), 0) AS BIGINT) AS executing, \
             CAST(COALESCE(SUM(CASE WHEN creation_time >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT) AS created, \
             MIN(CASE WHEN creation_time >= $3 THEN creation_time END) AS oldest, \
             CAST(COALESCE(SUM(CASE WHEN phase = 'COMPLETED' THEN result_bytes \
                 WHEN phase IN ('PENDING', 'QUEUED', 'EXECUTING', 'HELD', 'SUSPENDED') THEN planned_bytes END), 0) AS BIGINT) AS bytes, \
             CAST(COALESCE(SUM(CASE WHEN phase = 'COMPLETED' AND result_bytes IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS unsized \
             FROM uws_job WHERE service = $1 AND owner = $2",
        )
        .bind(self.service.as_str())
        .bind(owner)
        .bind(timestamp::to_micros(since))
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        let count = |column: &str| -> Result<u64, UwsError> {
            let n: i64 = row.try_get(column).map_err(store_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let oldest: Option<i64> = row.try_get("oldest").map_err(store_error)?;
        let mut usage = OwnerUsage {
            queued: count("queued")?,
            executing: count("executing")?,
            created_since: count("created")?,
            oldest_since: oldest.map(timestamp::from_micros),
            result_bytes: count("bytes")?,
        };
        // Creations recorded in the ledger (kept while a `jobs_per_hour` limit is set), which
        // deleting a job does not take back; the live rows count where the ledger has less.
        let ledger = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS created, MIN(creation_time) AS oldest \
             FROM uws_job_creation WHERE service = $1 AND owner = $2 AND creation_time >= $3",
        )
        .bind(self.service.as_str())
        .bind(owner)
        .bind(timestamp::to_micros(since))
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        let created: i64 = ledger.try_get("created").map_err(store_error)?;
        let created = u64::try_from(created).unwrap_or(0);
        if created > usage.created_since {
            let oldest: Option<i64> = ledger.try_get("oldest").map_err(store_error)?;
            usage.created_since = created;
            usage.oldest_since = oldest.map(timestamp::from_micros).or(usage.oldest_since);
        }
        if count("unsized")? > 0 {
            // Jobs completed before the result_bytes column existed: their sizes are only in
            // the result lists.
            let rows = sqlx::query(
                "SELECT results FROM uws_job \
                 WHERE service = $1 AND owner = $2 AND phase = 'COMPLETED' AND result_bytes IS NULL",
            )
            .bind(self.service.as_str())
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
            for row in &rows {
                let results: String = row.try_get("results").map_err(store_error)?;
                let results: Vec<StoredResult> =
                    serde_json::from_str(&results).map_err(|e| UwsError::Store(e.to_string()))?;
                usage.result_bytes += results.iter().filter_map(|r| r.size).sum::<u64>();
            }
        }
        Ok(usage)
    }

    async fn queued_count(&self, owner: &str, cap: u64) -> Result<u64, UwsError> {
        // Stops at `cap` rows of the partial index on QUEUED jobs (migration 3), so the cost is
        // bounded by the cap whatever the size of the owner's flood.
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM uws_job \
             WHERE service = $1 AND owner = $2 AND phase = 'QUEUED' LIMIT $3) AS capped",
        )
        .bind(self.service.as_str())
        .bind(owner)
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RecentRun>, UwsError> {
        // Ordered by creation time so that the (phase, creation_time) index serves it.
        let rows = sqlx::query(
            "SELECT start_time, end_time, result_bytes FROM uws_job \
             WHERE phase = 'COMPLETED' AND service = $1 \
             AND start_time IS NOT NULL AND end_time IS NOT NULL \
             ORDER BY creation_time DESC LIMIT $2",
        )
        .bind(self.service.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let start: i64 = row.try_get("start_time").map_err(store_error)?;
                let end: i64 = row.try_get("end_time").map_err(store_error)?;
                let bytes: Option<i64> = row.try_get("result_bytes").map_err(store_error)?;
                let micros = u64::try_from(end.saturating_sub(start)).unwrap_or(0);
                Ok(RecentRun {
                    run_time: std::time::Duration::from_micros(micros),
                    result_bytes: bytes.and_then(|b| u64::try_from(b).ok()),
                })
            })
            .collect()
    }

    async fn in_phases(
        &self,
        phases: &[ExecutionPhase],
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        if phases.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM uws_job WHERE service = $1 AND phase IN ({}) ORDER BY creation_time LIMIT $2",
            phase_list(phases.iter().copied())
        );
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(self.service.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(decode_id).collect()
    }
}

/// Phase names are a closed set of upper-case words, so writing them into SQL is safe.
fn phase_list(phases: impl Iterator<Item = ExecutionPhase>) -> String {
    let list: Vec<String> = phases.map(|p| format!("'{}'", p.as_str())).collect();
    if list.is_empty() {
        "NULL".to_owned()
    } else {
        list.join(", ")
    }
}

fn store_error(e: sqlx::Error) -> UwsError {
    UwsError::Store(e.to_string())
}

/// `url` without its password, fit for a log line.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[redacted]{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn encode_parameters(parameters: &[(String, String)]) -> Result<String, UwsError> {
    let stored: Vec<StoredParameter> = parameters
        .iter()
        .map(|(name, value)| StoredParameter {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    serde_json::to_string(&stored).map_err(|e| UwsError::Store(e.to_string()))
}

/// What a COMPLETED job's results weigh against the owner's `result_bytes` quota (results of
/// unknown size count 0).
fn result_bytes(results: &[JobResult]) -> i64 {
    let total: u64 = results.iter().filter_map(|r| r.size).sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}

fn encode_results(results: &[JobResult]) -> Result<String, UwsError> {
    let stored: Vec<StoredResult> = results
        .iter()
        .map(|r| StoredResult {
            id: r.id.clone(),
            key: r.key.clone(),
            mime_type: r.mime_type.clone(),
            size: r.size,
        })
        .collect();
    serde_json::to_string(&stored).map_err(|e| UwsError::Store(e.to_string()))
}

fn decode_id(row: &AnyRow) -> Result<JobId, UwsError> {
    let id: String = row.try_get("id").map_err(store_error)?;
    JobId::parse(&id).map_err(|_| UwsError::Store(format!("malformed job id {id:?} in store")))
}

fn decode_phase(row: &AnyRow) -> Result<ExecutionPhase, UwsError> {
    let phase: String = row.try_get("phase").map_err(store_error)?;
    ExecutionPhase::from_str(&phase)
        .map_err(|_| UwsError::Store(format!("unknown phase {phase:?} in store")))
}

fn decode_job(row: &AnyRow) -> Result<Job, UwsError> {
    let time = |name: &str| -> Result<Option<OffsetDateTime>, UwsError> {
        let v: Option<i64> = row.try_get(name).map_err(store_error)?;
        Ok(v.map(timestamp::from_micros))
    };
    let parameters: String = row.try_get("parameters").map_err(store_error)?;
    let parameters: Vec<StoredParameter> =
        serde_json::from_str(&parameters).map_err(|e| UwsError::Store(e.to_string()))?;
    let results: String = row.try_get("results").map_err(store_error)?;
    let results: Vec<StoredResult> =
        serde_json::from_str(&results).map_err(|e| UwsError::Store(e.to_string()))?;
    let error_code: Option<String> = row.try_get("error_code").map_err(store_error)?;
    let error_message: Option<String> = row.try_get("error_message").map_err(store_error)?;
    let execution_duration: i64 = row.try_get("execution_duration").map_err(store_error)?;
    let planned_bytes: Option<i64> = row.try_get("planned_bytes").map_err(store_error)?;
    let progress: Option<String> = row.try_get("progress").map_err(store_error)?;
    Ok(Job {
        id: decode_id(row)?,
        run_id: row.try_get("run_id").map_err(store_error)?,
        owner: row.try_get("owner").map_err(store_error)?,
        phase: decode_phase(row)?,
        quote: time("quote")?,
        creation_time: time("creation_time")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        start_time: time("start_time")?,
        end_time: time("end_time")?,
        execution_duration: u32::try_from(execution_duration).unwrap_or(0),
        destruction: time("destruction")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        parameters: parameters.into_iter().map(|p| (p.name, p.value)).collect(),
        results: results
            .into_iter()
            .map(|r| JobResult {
                id: r.id,
                key: r.key,
                mime_type: r.mime_type,
                size: r.size,
            })
            .collect(),
        error: error_code.map(|code| {
            JobError::new(
                ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal),
                error_message.unwrap_or_default(),
            )
        }),
        planned_bytes: planned_bytes.and_then(|b| u64::try_from(b).ok()),
        progress: progress.as_deref().and_then(uws::Progress::decode),
    })
}
