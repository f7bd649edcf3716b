//! The synchronous requests' jobs a store created and has not yet seen end, and the one phase
//! change of theirs that is kept in memory instead of written.
//!
//! A sync job's client waits on its open connection: nobody else acts on the job while it runs,
//! and a crash loses the request whatever the store holds (the client retries). So its writes
//! are not made durable (see `SqlJobStore::transition`), and its QUEUED → EXECUTING (a worker's
//! `begin`) and EXECUTING → QUEUED (a worker's `hand_back`) are not written at all when they go
//! through the store that created the job: the row stays QUEUED, this map holds the phase and
//! the start time, and the final write sets both with the final phase, accepting the QUEUED row
//! the map stands for. That is one write fewer per sync request, on the path every request takes.
//!
//! Every answer stays the one the row would give had it been written: `begin` answers the job
//! with its start time to the microsecond the column keeps, a second `begin` is refused as from
//! EXECUTING, a read or a list of the job shows EXECUTING and that start time (only a list's
//! `PHASE` filter and the owner's queued count see the row's QUEUED for the milliseconds of a
//! cut). A process that restarts has forgotten the map and finds the job QUEUED, which it runs
//! again as it does any job its previous run left QUEUED or EXECUTING.
//!
//! Another process writing the same rows (a second wobbly, or a role opening the database
//! itself) is heard at the final write: an abort there leaves the row ABORTED, and the final
//! write here, which accepts only QUEUED or EXECUTING, is refused. A job created here that is
//! begun elsewhere is written as any other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uws::{ExecutionPhase, Job, JobId, timestamp};

/// How long a sync job not begun here is remembered: its transitions are written by another
/// process (a frontend that opens the database itself, its workers another), or its client left
/// and it waits in a long queue. Forgetting it only makes its later writes durable.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Entries between two sweeps for those to forget.
const SWEEP_EVERY: usize = 4096;

/// What the store knows of one sync job.
#[derive(Debug, Clone)]
enum Held {
    /// The row holds the job's phase; only its writes' durability is decided here.
    Row,
    /// QUEUED, in the row as here: the job as the row has it, ready to begin in memory.
    Queued(Job),
    /// EXECUTING here, QUEUED in the row: the job as `begin` answered it.
    Executing(Job),
}

#[derive(Debug)]
struct Entry {
    held: Held,
    since: Instant,
}

/// A phase change done here: the job as the row would have answered it, or the phase it is
/// in here that refuses the change (a second `begin`).
pub(crate) type InMemory = Result<Job, ExecutionPhase>;

/// The sync jobs of one store (shared by its clones and its other services' views).
#[derive(Debug, Default)]
pub(crate) struct SyncJobs {
    entries: HashMap<JobId, Entry>,
    inserted: usize,
}

impl SyncJobs {
    /// Notes a sync job the store just created, as the row answered it.
    pub(crate) fn created(&mut self, job: Job, now: Instant) {
        self.inserted += 1;
        if self.inserted.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now);
        }
        let held = match job.phase {
            ExecutionPhase::Queued => Held::Queued(job.clone()),
            _ => Held::Row,
        };
        self.entries.insert(job.id, Entry { held, since: now });
    }

    /// Forgets the jobs not running here that have been held for [`FORGET_AFTER`]. One that
    /// runs here stays until it ends: its row does not say it runs.
    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, entry| {
            matches!(entry.held, Held::Executing(_))
                || now.saturating_duration_since(entry.since) < FORGET_AFTER
        });
    }

    /// Whether `id` is a sync job created here and not known to have ended.
    pub(crate) fn contains(&self, id: &JobId) -> bool {
        self.entries.contains_key(id)
    }

    /// QUEUED → EXECUTING at `at` in memory, when the job is QUEUED here; refused when it is
    /// EXECUTING here. `None`: the row decides.
    pub(crate) fn begin(&mut self, id: &JobId, at: OffsetDateTime) -> Option<InMemory> {
        let entry = self.entries.get_mut(id)?;
        match &entry.held {
            Held::Queued(job) => {
                let mut job = job.clone();
                job.phase = ExecutionPhase::Executing;
                // The column keeps microseconds: answer what a read of it would.
                job.start_time = Some(timestamp::from_micros(timestamp::to_micros(at)));
                entry.held = Held::Executing(job.clone());
                Some(Ok(job))
            }
            Held::Executing(_) => Some(Err(ExecutionPhase::Executing)),
            Held::Row => None,
        }
    }

    /// EXECUTING → QUEUED in memory (a worker hands the job back), when it runs here.
    /// `None`: the row decides.
    pub(crate) fn hand_back(&mut self, id: &JobId) -> Option<InMemory> {
        let entry = self.entries.get_mut(id)?;
        let Held::Executing(job) = &entry.held else {
            return None;
        };
        let mut job = job.clone();
        job.phase = ExecutionPhase::Queued;
        entry.held = Held::Queued(job.clone());
        Some(Ok(job))
    }

    /// When the job runs here: the start time its row has not been given.
    pub(crate) fn started(&self, id: &JobId) -> Option<OffsetDateTime> {
        match &self.entries.get(id)?.held {
            Held::Executing(job) => job.start_time,
            _ => None,
        }
    }

    /// Takes a written answer about the job: a final one ends the entry, a QUEUED one can
    /// begin here again, an EXECUTING one is the row's to hold from now on. The fields of the
    /// job kept for `begin` follow the row (a new destruction time, say).
    pub(crate) fn written(&mut self, job: &Job) {
        if job.phase.is_final() {
            self.entries.remove(&job.id);
            return;
        }
        let started = self.started(&job.id);
        if let Some(entry) = self.entries.get_mut(&job.id) {
            entry.held = match (job.phase, started) {
                // The row is behind this map: keep the phase and start time held here.
                (ExecutionPhase::Queued, Some(start)) => {
                    let mut held = job.clone();
                    held.phase = ExecutionPhase::Executing;
                    held.start_time = Some(start);
                    Held::Executing(held)
                }
                (ExecutionPhase::Queued, None) => Held::Queued(job.clone()),
                _ => Held::Row,
            };
        }
    }

    /// A job as read from its row, with the phase and start time this map holds for it; a
    /// final row ends the entry.
    pub(crate) fn read(&mut self, mut job: Job) -> Job {
        if job.phase.is_final() {
            self.entries.remove(&job.id);
        } else if job.phase == ExecutionPhase::Queued
            && let Some(start) = self.started(&job.id)
        {
            job.phase = ExecutionPhase::Executing;
            job.start_time = Some(start);
        }
        job
    }

    /// The phase to list a job under whose row says `phase`.
    pub(crate) fn listed_phase(&self, id: &JobId, phase: ExecutionPhase) -> ExecutionPhase {
        match (phase, self.entries.get(id).map(|e| &e.held)) {
            (ExecutionPhase::Queued, Some(Held::Executing(_))) => ExecutionPhase::Executing,
            _ => phase,
        }
    }

    /// Forgets the job (it was deleted, or ended).
    pub(crate) fn forget(&mut self, id: &JobId) {
        self.entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued_job() -> Job {
        let now = timestamp::now();
        Job {
            id: JobId::random(),
            run_id: None,
            owner: "alice".into(),
            phase: ExecutionPhase::Queued,
            quote: None,
            creation_time: now,
            start_time: None,
            end_time: None,
            execution_duration: 60,
            destruction: now + Duration::from_secs(3600),
            parameters: vec![("ID".into(), "demo".into())],
            results: Vec::new(),
            error: None,
            planned_bytes: None,
            progress: None,
        }
    }

    /// A store's memory holding one queued sync job it just created, and that job.
    fn created_here() -> (SyncJobs, Job) {
        let mut jobs = SyncJobs::default();
        let job = queued_job();
        jobs.created(job.clone(), Instant::now());
        (jobs, job)
    }

    fn moved(answer: Option<InMemory>) -> Job {
        match answer {
            Some(Ok(job)) => job,
            other => panic!("not moved in memory: {other:?}"),
        }
    }

    #[test]
    fn a_queued_sync_job_begins_in_memory_at_the_microsecond() {
        let (mut jobs, job) = created_here();
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("instant");
        let begun = moved(jobs.begin(&job.id, at));
        assert_eq!(begun.phase, ExecutionPhase::Executing);
        let column = timestamp::from_micros(timestamp::to_micros(at));
        assert_eq!(begun.start_time, Some(column));
        assert_eq!(jobs.started(&job.id), Some(column));
        assert_eq!(
            Job {
                phase: ExecutionPhase::Queued,
                start_time: None,
                ..begun
            },
            job,
            "nothing else changes"
        );
    }

    #[test]
    fn a_second_begin_is_refused_as_from_executing() {
        let (mut jobs, job) = created_here();
        moved(jobs.begin(&job.id, timestamp::now()));
        assert_eq!(
            jobs.begin(&job.id, timestamp::now()),
            Some(Err(ExecutionPhase::Executing))
        );
    }

    #[test]
    fn a_job_handed_back_begins_again() {
        let (mut jobs, job) = created_here();
        let first = moved(jobs.begin(&job.id, timestamp::now()));
        let back = moved(jobs.hand_back(&job.id));
        assert_eq!(back.phase, ExecutionPhase::Queued);
        assert_eq!(
            back.start_time, first.start_time,
            "as the row would keep it"
        );
        assert_eq!(jobs.hand_back(&job.id), None, "QUEUED: the row decides");
        let later = timestamp::now() + Duration::from_secs(1);
        let second = moved(jobs.begin(&job.id, later));
        assert_eq!(second.start_time, Some(later));
    }

    #[test]
    fn jobs_not_created_here_or_not_queued_are_the_rows() {
        let mut jobs = SyncJobs::default();
        let elsewhere = queued_job();
        assert_eq!(jobs.begin(&elsewhere.id, timestamp::now()), None);
        assert_eq!(jobs.hand_back(&elsewhere.id), None);
        assert!(!jobs.contains(&elsewhere.id));
        let pending = Job {
            phase: ExecutionPhase::Pending,
            ..queued_job()
        };
        jobs.created(pending.clone(), Instant::now());
        assert!(
            jobs.contains(&pending.id),
            "its writes are still not durable"
        );
        assert_eq!(jobs.begin(&pending.id, timestamp::now()), None);
        // Queued by a written transition, it can begin here.
        jobs.written(&Job {
            phase: ExecutionPhase::Queued,
            ..pending.clone()
        });
        moved(jobs.begin(&pending.id, timestamp::now()));
    }

    #[test]
    fn a_read_of_the_queued_row_shows_the_job_running_here() {
        let (mut jobs, job) = created_here();
        assert_eq!(jobs.read(job.clone()), job, "not begun: the row as it is");
        let begun = moved(jobs.begin(&job.id, timestamp::now()));
        assert_eq!(jobs.read(job.clone()), begun);
        assert_eq!(
            jobs.listed_phase(&job.id, ExecutionPhase::Queued),
            ExecutionPhase::Executing
        );
        assert_eq!(
            jobs.listed_phase(&job.id, ExecutionPhase::Aborted),
            ExecutionPhase::Aborted,
            "a row that moved on elsewhere is the truth"
        );
    }

    #[test]
    fn a_final_row_read_or_written_ends_the_entry() {
        for by_read in [true, false] {
            let (mut jobs, job) = created_here();
            moved(jobs.begin(&job.id, timestamp::now()));
            let aborted = Job {
                phase: ExecutionPhase::Aborted,
                ..job.clone()
            };
            if by_read {
                assert_eq!(jobs.read(aborted.clone()), aborted);
            } else {
                jobs.written(&aborted);
            }
            assert!(!jobs.contains(&job.id));
            assert_eq!(jobs.started(&job.id), None);
        }
    }

    #[test]
    fn a_written_update_of_a_running_job_keeps_it_running_here() {
        let (mut jobs, job) = created_here();
        let begun = moved(jobs.begin(&job.id, timestamp::now()));
        let later = job.destruction + Duration::from_secs(60);
        let row = Job {
            destruction: later,
            ..job.clone()
        };
        jobs.written(&row);
        let read = jobs.read(row);
        assert_eq!(read.phase, ExecutionPhase::Executing);
        assert_eq!(read.start_time, begun.start_time);
        assert_eq!(read.destruction, later);
        // Written EXECUTING (with a progress report), the row holds the phase from then on.
        jobs.written(&read);
        assert_eq!(jobs.started(&job.id), None);
        assert!(jobs.contains(&job.id));
        assert_eq!(jobs.begin(&job.id, timestamp::now()), None);
    }

    #[test]
    fn a_job_forgotten_is_the_rows_again() {
        let (mut jobs, job) = created_here();
        moved(jobs.begin(&job.id, timestamp::now()));
        jobs.forget(&job.id);
        assert!(!jobs.contains(&job.id));
        assert_eq!(jobs.started(&job.id), None);
        assert_eq!(jobs.read(job.clone()), job);
    }

    #[test]
    fn creating_a_job_sweeps_only_every_few_thousand_creations() {
        // A sweep walks every entry: at each creation it would make creating quadratic.
        let mut jobs = SyncJobs::default();
        let start = Instant::now();
        let old = queued_job();
        jobs.created(old.clone(), start);
        jobs.created(queued_job(), start + FORGET_AFTER);
        assert!(jobs.contains(&old.id), "no sweep yet");
    }

    #[test]
    fn old_entries_not_running_here_are_forgotten_at_a_sweep() {
        let mut jobs = SyncJobs::default();
        let start = Instant::now();
        let running = queued_job();
        let waiting = queued_job();
        jobs.created(running.clone(), start);
        jobs.created(waiting.clone(), start);
        moved(jobs.begin(&running.id, timestamp::now()));
        let later = start + FORGET_AFTER;
        let mut fresh = Vec::new();
        for _ in 0..SWEEP_EVERY {
            let job = queued_job();
            fresh.push(job.id.clone());
            jobs.created(job, later);
        }
        assert!(!jobs.contains(&waiting.id), "swept");
        assert!(jobs.contains(&running.id), "its row does not say it runs");
        assert!(fresh.iter().all(|id| jobs.contains(id)));
    }
}
