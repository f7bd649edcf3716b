//! Fast tests of [`Worker::run_job`] and of the result-naming rules, on the in-memory store,
//! queue and recording result store of `uws::testing` and the demo images (three small files
//! written once per test into a temporary directory).

use std::sync::Arc;

use soda::repository::Repositories;
use uws::job::{ErrorCode, ExecutionPhase, Job, JobId};
use uws::params::Parameters;
use uws::queue::Priority;
use uws::store::JobStore;
use uws::testing::{Harness, ResultEvent};

use super::{Outcome, Worker, WorkerSettings};

/// A centre and radius inside the demo image `m31`.
const M31_CIRCLE: &str = "10.684708 41.26875 0.01";
const ORION_CIRCLE: &str = "83.822083 -5.391111 0.01";

struct Setup {
    h: Harness,
    worker: Worker,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let images = dir.path().join("demo");
    soda::write_demo_repository(&images).expect("demo images");
    let h = Harness::default();
    let worker = Worker::new(
        h.uws.clone(),
        Arc::new(Repositories::new([("demo".to_owned(), images)])),
        WorkerSettings {
            scratch_dir: dir.path().join("scratch"),
            software: "Skycut test".to_owned(),
            part_bytes: 1 << 30,
            shards: crate::ShardLimits::default(),
            max_stamp_side: None,
            jobs_at_once: 1,
        },
    );
    std::fs::create_dir_all(dir.path().join("scratch")).expect("scratch directory");
    Setup {
        h,
        worker,
        _dir: dir,
    }
}

/// A job of alice's with `parameters`, QUEUED.
async fn queued(h: &Harness, parameters: &[(&str, &str)]) -> Job {
    let run: Parameters = [("PHASE", "RUN")].into_iter().collect();
    h.uws
        .create(
            JobId::random(),
            "alice",
            &run,
            parameters.iter().copied().collect(),
            Priority::Async,
            None,
            uws::Admission::default(),
        )
        .await
        .expect("create")
}

async fn stored(h: &Harness, id: &JobId) -> Job {
    h.store.get(id).await.expect("get").expect("the job")
}

/// `(result ID, content type)` of each object put, in order.
fn puts(h: &Harness) -> Vec<(String, String)> {
    h.results
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ResultEvent::Put {
                key, content_type, ..
            } => Some((key, content_type)),
            ResultEvent::Delete(_) | ResultEvent::DeletePrefix(_) => None,
        })
        .collect()
}

fn result_ids(job: &Job) -> Vec<&str> {
    job.results.iter().map(|r| r.id.as_str()).collect()
}

#[tokio::test]
async fn a_single_cutout_completes_with_one_fits_result_named_result() {
    let s = setup();
    let job = queued(&s.h, &[("ID", "butler://demo/m31"), ("CIRCLE", M31_CIRCLE)]).await;
    let outcome = s.worker.run_job(&job.id, false, None).await.expect("run");
    assert_eq!(outcome, Outcome::Completed);
    let job = stored(&s.h, &job.id).await;
    assert_eq!(job.phase, ExecutionPhase::Completed);
    assert_eq!(result_ids(&job), ["result"]);
    assert_eq!(job.results[0].mime_type, "application/fits");
    assert!(job.results[0].size.is_some_and(|n| n > 2880));
}

#[tokio::test]
async fn a_result_key_is_the_job_then_an_attempt_prefix_then_the_result_id() {
    let s = setup();
    let job = queued(&s.h, &[("ID", "butler://demo/m31"), ("CIRCLE", M31_CIRCLE)]).await;
    s.worker.run_job(&job.id, false, None).await.expect("run");
    let key = &stored(&s.h, &job.id).await.results[0].key;
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 3, "{key}");
    assert_eq!(parts[0], job.id.as_str());
    assert_eq!(parts[1].len(), 16, "{key}");
    assert!(parts[1].chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    assert_eq!(parts[2], "result.fits");
    assert_eq!(puts(&s.h), [(key.clone(), "application/fits".to_owned())]);
}

#[tokio::test]
async fn several_cutouts_are_numbered_and_followed_by_one_file_of_them_all() {
    let s = setup();
    let job = queued(
        &s.h,
        &[
            ("ID", "butler://demo/m31"),
            ("CIRCLE", M31_CIRCLE),
            ("CIRCLE", "10.684708 41.26875 0.02"),
        ],
    )
    .await;
    s.worker.run_job(&job.id, false, None).await.expect("run");
    let job = stored(&s.h, &job.id).await;
    assert_eq!(job.phase, ExecutionPhase::Completed);
    assert_eq!(result_ids(&job), ["cutout-1", "cutout-2", "cutouts"]);
    assert!(
        job.results
            .iter()
            .all(|r| r.mime_type == "application/fits")
    );
}

#[tokio::test]
async fn a_preview_is_listed_before_the_fits_result() {
    let s = setup();
    let job = queued(
        &s.h,
        &[
            ("ID", "butler://demo/m31"),
            ("CIRCLE", M31_CIRCLE),
            ("RESPONSEFORMAT", "image/png"),
        ],
    )
    .await;
    s.worker.run_job(&job.id, false, None).await.expect("run");
    let job = stored(&s.h, &job.id).await;
    assert_eq!(result_ids(&job), ["preview", "result"]);
    assert_eq!(job.results[0].mime_type, "image/png");
    assert!(job.results[0].key.ends_with("/preview.png"));
}

#[tokio::test]
async fn a_header_request_gives_a_text_result() {
    let s = setup();
    let job = queued(
        &s.h,
        &[
            ("ID", "butler://demo/m31"),
            ("CIRCLE", M31_CIRCLE),
            ("META", "true"),
        ],
    )
    .await;
    s.worker.run_job(&job.id, false, None).await.expect("run");
    let job = stored(&s.h, &job.id).await;
    assert_eq!(result_ids(&job), ["result"]);
    assert!(job.results[0].mime_type.starts_with("text/plain"));
    assert!(job.results[0].key.ends_with("/result.txt"));
}

#[tokio::test]
async fn a_pair_that_cannot_be_cut_becomes_an_error_text_among_the_results() {
    let s = setup();
    let job = queued(
        &s.h,
        &[
            ("ID", "butler://demo/m31"),
            ("ID", "butler://demo/nowhere"),
            ("CIRCLE", M31_CIRCLE),
        ],
    )
    .await;
    let outcome = s.worker.run_job(&job.id, false, None).await.expect("run");
    assert_eq!(outcome, Outcome::Completed);
    let job = stored(&s.h, &job.id).await;
    assert_eq!(result_ids(&job), ["cutout-1", "cutout-2", "cutouts"]);
    assert!(job.results[1].mime_type.starts_with("text/plain"));
    assert!(job.results[1].key.ends_with("/cutout-2.txt"));
}

#[tokio::test]
async fn a_job_whose_every_pair_fails_ends_in_error_with_the_first_failure() {
    let s = setup();
    let job = queued(
        &s.h,
        &[("ID", "butler://demo/nowhere"), ("CIRCLE", M31_CIRCLE)],
    )
    .await;
    let outcome = s.worker.run_job(&job.id, false, None).await.expect("run");
    assert_eq!(outcome, Outcome::Failed);
    let job = stored(&s.h, &job.id).await;
    assert_eq!(job.phase, ExecutionPhase::Error);
    assert!(job.results.is_empty());
    let error = job.error.expect("an error");
    assert_eq!(error.code, ErrorCode::NotFound, "{error:?}");
}

#[tokio::test]
async fn a_stencil_off_the_image_fails_the_job_with_no_data_and_stores_nothing() {
    let s = setup();
    let job = queued(
        &s.h,
        &[("ID", "butler://demo/m31"), ("CIRCLE", ORION_CIRCLE)],
    )
    .await;
    assert_eq!(
        s.worker.run_job(&job.id, false, None).await.expect("run"),
        Outcome::Failed
    );
    let job = stored(&s.h, &job.id).await;
    assert_eq!(job.phase, ExecutionPhase::Error);
    assert_eq!(job.error.map(|e| e.code), Some(ErrorCode::NoData));
    assert!(puts(&s.h).is_empty());
}

#[tokio::test]
async fn a_job_that_is_not_queued_is_skipped_and_left_as_it_is() {
    let s = setup();
    let job = queued(&s.h, &[("ID", "butler://demo/m31"), ("CIRCLE", M31_CIRCLE)]).await;
    s.h.uws
        .set_phase("alice", job.id.as_str(), Some("ABORT"), None)
        .await
        .expect("abort");
    let outcome = s.worker.run_job(&job.id, false, None).await.expect("run");
    assert_eq!(outcome, Outcome::Skipped);
    assert_eq!(stored(&s.h, &job.id).await.phase, ExecutionPhase::Aborted);
    assert!(puts(&s.h).is_empty());
}

#[tokio::test]
async fn a_deleted_job_is_skipped() {
    let s = setup();
    let outcome = s
        .worker
        .run_job(&JobId::random(), false, None)
        .await
        .expect("run");
    assert_eq!(outcome, Outcome::Skipped);
}

#[tokio::test]
async fn an_executing_job_is_skipped_unless_taken_over() {
    let s = setup();
    let job = queued(&s.h, &[("ID", "butler://demo/m31"), ("CIRCLE", M31_CIRCLE)]).await;
    s.h.uws.begin(&job.id).await.expect("begin");
    assert_eq!(
        s.worker.run_job(&job.id, false, None).await.expect("run"),
        Outcome::Skipped
    );
    assert_eq!(
        s.worker.run_job(&job.id, true, None).await.expect("run"),
        Outcome::Completed
    );
    assert_eq!(stored(&s.h, &job.id).await.phase, ExecutionPhase::Completed);
}

/// A worker whose results go to a local bucket that keeps synchronous results in `memory`.
struct MemorySetup {
    uws: uws::service::Uws,
    store: Arc<uws::testing::MemoryJobStore>,
    bucket: Arc<bucket::LocalBucket>,
    worker: Worker,
    dir: tempfile::TempDir,
}

fn setup_with_memory(memory: Arc<bucket::MemoryObjects>) -> MemorySetup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let images = dir.path().join("demo");
    soda::write_demo_repository(&images).expect("demo images");
    for sub in ["scratch", "bucket"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("directory");
    }
    let bucket = Arc::new(
        bucket::LocalBucket::new(dir.path().join("bucket"), bucket::UrlSigner::new(b"k"))
            .with_memory(memory),
    );
    let store = Arc::new(uws::testing::MemoryJobStore::new());
    let uws = uws::service::Uws::new(
        store.clone(),
        Arc::new(uws::testing::MemoryQueue::new()),
        Arc::new(uws::events::LocalPhaseEvents::new()),
        bucket.clone(),
        uws::service::JobLimits::default(),
    );
    let worker = Worker::new(
        uws.clone(),
        Arc::new(Repositories::new([("demo".to_owned(), images)])),
        WorkerSettings {
            scratch_dir: dir.path().join("scratch"),
            software: "Skycut test".to_owned(),
            part_bytes: 1 << 30,
            shards: crate::ShardLimits::default(),
            max_stamp_side: None,
            jobs_at_once: 1,
        },
    );
    MemorySetup {
        uws,
        store,
        bucket,
        worker,
        dir,
    }
}

impl MemorySetup {
    /// Runs the cutout of `M31_CIRCLE` as a synchronous request does: awaited here while this
    /// worker runs it; returns the job as the waiter got it.
    async fn run_sync(&self) -> Job {
        let id = JobId::random();
        let uws = self.uws.clone();
        let parameters: Parameters = [("ID", "butler://demo/m31"), ("CIRCLE", M31_CIRCLE)]
            .into_iter()
            .collect();
        let waiting = id.clone();
        let waiter = tokio::spawn(async move {
            uws.run_and_wait(
                waiting,
                "alice",
                parameters,
                Priority::Sync,
                None,
                std::time::Duration::from_secs(20),
                uws::Admission::default(),
            )
            .await
        });
        while self.store.get(&id).await.expect("get").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let outcome = self.worker.run_job(&id, false, None).await.expect("run");
        assert_eq!(outcome, Outcome::Completed);
        waiter.await.expect("waiter").expect("run_and_wait")
    }

    /// The names of the files in the test directory's `sub`.
    fn files(&self, sub: &str) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join(sub))
            .expect("directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The demo cutout as `cut_to_file` makes it, but for its provenance time.
fn expected_cutout(dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join("expected.fits");
    let source = dir.join("demo/m31.fits");
    let stencil = soda::Stencil::parse_circle(M31_CIRCLE).expect("circle");
    soda::cut_to_file(&source, &stencil, &provenance_at_any_time(), &out).expect("cut");
    std::fs::read(&out).expect("read")
}

fn provenance_at_any_time() -> soda::Provenance {
    soda::Provenance {
        source_id: "butler://demo/m31".to_owned(),
        stencil: soda::Stencil::parse_circle(M31_CIRCLE)
            .expect("circle")
            .to_string(),
        software: "Skycut test".to_owned(),
        time_utc: String::new(),
    }
}

/// The cards of a FITS file but its `DATE` ones (the time a cutout was made).
fn without_dates(file: &[u8]) -> Vec<&[u8]> {
    file.chunks(80)
        .filter(|card| !card.starts_with(b"DATE"))
        .collect()
}

#[tokio::test]
async fn a_synchronous_cutout_is_cut_into_memory_and_no_file_is_written() {
    let memory = Arc::new(bucket::MemoryObjects::new(
        1 << 20,
        std::time::Duration::from_secs(60),
    ));
    let s = setup_with_memory(memory.clone());
    let job = s.run_sync().await;
    assert_eq!(job.phase, ExecutionPhase::Completed);
    assert_eq!(result_ids(&job), ["result"]);
    let (bytes, meta) = s
        .bucket
        .memory_object(&job.results[0].key)
        .expect("the result is held in memory");
    assert_eq!(meta.content_type, "application/fits");
    assert_eq!(job.results[0].size, Some(bytes.len() as u64));
    assert_eq!(memory.bytes(), bytes.len() as u64);
    assert!(s.files("scratch").is_empty(), "{:?}", s.files("scratch"));
    assert!(s.files("bucket").is_empty(), "{:?}", s.files("bucket"));
    let expected = expected_cutout(s.dir.path());
    assert_eq!(without_dates(&bytes).len(), without_dates(&expected).len());
    assert!(without_dates(&bytes) == without_dates(&expected));
}

#[tokio::test]
async fn a_synchronous_cutout_cut_into_memory_needs_no_scratch_space() {
    let memory = Arc::new(bucket::MemoryObjects::new(
        1 << 20,
        std::time::Duration::from_secs(60),
    ));
    let s = setup_with_memory(memory.clone());
    // No file can be made in the scratch directory: it is a file itself.
    let scratch = s.dir.path().join("scratch");
    std::fs::remove_dir(&scratch).expect("scratch directory");
    std::fs::write(&scratch, b"").expect("a file in its place");
    let job = s.run_sync().await;
    assert_eq!(job.phase, ExecutionPhase::Completed, "{:?}", job.error);
    assert!(s.bucket.memory_object(&job.results[0].key).is_some());
}

#[tokio::test]
async fn a_synchronous_cutout_larger_than_the_memory_is_cut_to_a_file() {
    let memory = Arc::new(bucket::MemoryObjects::new(
        100,
        std::time::Duration::from_secs(60),
    ));
    let s = setup_with_memory(memory.clone());
    let job = s.run_sync().await;
    assert_eq!(job.phase, ExecutionPhase::Completed);
    assert!(s.bucket.memory_object(&job.results[0].key).is_none());
    assert_eq!(memory.bytes(), 0);
    assert_eq!(s.files("bucket").len(), 1, "one object on disk");
    assert!(s.files("scratch").is_empty(), "the scratch file is removed");
}

#[tokio::test]
async fn a_synchronous_cutout_the_full_memory_declines_is_stored_as_a_file() {
    let memory = Arc::new(bucket::MemoryObjects::new(
        1 << 20,
        std::time::Duration::from_secs(60),
    ));
    let filler = bytes::Bytes::from(vec![0u8; (1 << 20) - 100]);
    let meta = uws::results::ObjectMeta {
        content_type: "application/fits".to_owned(),
        filename: "x.fits".to_owned(),
    };
    memory
        .insert("other/x/result.fits", filler, meta)
        .expect("room");
    let s = setup_with_memory(memory.clone());
    let job = s.run_sync().await;
    assert_eq!(job.phase, ExecutionPhase::Completed);
    assert!(s.bucket.memory_object(&job.results[0].key).is_none());
    let on_disk = s.files("bucket");
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    let bytes = std::fs::read(s.dir.path().join("bucket").join(&on_disk[0])).expect("read");
    assert_eq!(job.results[0].size, Some(bytes.len() as u64));
    assert!(without_dates(&bytes) == without_dates(&expected_cutout(s.dir.path())));
    assert!(s.files("scratch").is_empty(), "the scratch file is removed");
}
