//! Micro-benchmarks of the UWS documents every job read renders (a job, a list of 100 jobs) and
//! of the DALI parameter handling a job creation goes through.
//!
//! Run with `cargo bench -p uws`; CI only builds them (`cargo clippy --all-targets`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use uws::store::JobSummary;
use uws::{ExecutionPhase, Job, JobId, JobResult, Parameters, timestamp, xml};

fn job_id(i: u64) -> JobId {
    JobId::parse(&format!("{i:032x}")).expect("32 hex digits")
}

/// A completed single-cutout job as the frontend renders it.
fn completed_job() -> Job {
    let now = timestamp::now();
    Job {
        id: job_id(1),
        run_id: Some("bench run".to_owned()),
        owner: "someone@example.org".to_owned(),
        phase: ExecutionPhase::Completed,
        quote: Some(now),
        creation_time: now,
        start_time: Some(now),
        end_time: Some(now),
        execution_duration: 600,
        destruction: now,
        parameters: vec![
            ("ID".to_owned(), "butler://bench/bench".to_owned()),
            ("CIRCLE".to_owned(), "150 2 0.00275".to_owned()),
            ("MASK".to_owned(), "true".to_owned()),
        ],
        results: vec![JobResult {
            id: "cutout".to_owned(),
            key: "results/0123/cutout.fits".to_owned(),
            mime_type: "application/fits".to_owned(),
            size: Some(48960),
        }],
        error: None,
        planned_bytes: None,
        progress: None,
    }
}

fn documents(c: &mut Criterion) {
    let job = completed_job();
    let urls = vec![
        "http://127.0.0.1:8080/api/cutout/files/results/0123/cutout.fits?expires=1700000000&signature=0123456789abcdef0123456789abcdef".to_owned(),
    ];
    c.bench_function("xml::job completed, one result", |b| {
        b.iter(|| xml::job(black_box(&job), black_box(&urls)))
    });
    let now = timestamp::now();
    let list: Vec<JobSummary> = (0..100)
        .map(|i| JobSummary {
            id: job_id(i),
            run_id: None,
            owner: "someone@example.org".to_owned(),
            phase: ExecutionPhase::Completed,
            creation_time: now,
        })
        .collect();
    c.bench_function("xml::job_list 100 jobs", |b| {
        b.iter(|| {
            xml::job_list(black_box(&list), |id| {
                format!("http://127.0.0.1:8080/api/cutout/jobs/{id}")
            })
        })
    });
}

fn parameters(c: &mut Criterion) {
    let request = [
        ("id", "butler://bench/bench"),
        ("circle", "150 2 0.00275"),
        ("runid", "bench run"),
        ("executionduration", "60"),
        ("destruction", "2030-01-02T03:04:05Z"),
        ("phase", "RUN"),
    ];
    c.bench_function(
        "Parameters: collect a creation and read its UWS controls",
        |b| {
            b.iter(|| {
                let p: Parameters = black_box(&request).iter().copied().collect();
                let destruction = p.first("DESTRUCTION").map(timestamp::parse);
                (
                    p.first("PHASE").is_some(),
                    p.first("RUNID").map(str::len),
                    destruction.map(|d| d.is_ok()),
                    p.without(&["PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION"]),
                )
            })
        },
    );
}

criterion_group!(benches, documents, parameters);
criterion_main!(benches);
