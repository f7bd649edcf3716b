//! The HTTP client against the real wobbly service (on SQLite, in this process): what a frontend
//! or worker sees in the distributed topology.

use std::time::Duration;

use uws::store::{JobFilter, JobStore, Transition};
use uws::{NewJob, timestamp};
use wobbly::service::router;
use wobbly::{SqlJobStore, TokenKey, WobblyClient};

async fn serve(dir: &tempfile::TempDir, key: &TokenKey) -> String {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jobs.sqlite").display()
    );
    let store = SqlJobStore::connect(&url, "client-test", 4)
        .await
        .expect("sqlite store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = router(store, key.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn new_job(owner: &str, offset_ms: i64) -> NewJob {
    let now = timestamp::now() + time::Duration::milliseconds(offset_ms);
    NewJob {
        owner: owner.into(),
        run_id: None,
        parameters: vec![("ID".into(), "butler://demo/a".into())],
        execution_duration: 60,
        destruction: now + Duration::from_secs(3600),
        creation_time: now,
        queued: false,
        admission: uws::Admission::default(),
    }
}

#[tokio::test]
async fn the_client_follows_cursor_pages_to_the_end_or_to_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key)
        .expect("client")
        .with_page_size(3);
    let mut created = Vec::new();
    for i in 0..10 {
        created.push(client.create(new_job("dora", i)).await.expect("create").id);
    }
    created.reverse();

    let all = client
        .list("dora", &JobFilter::default())
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        created
    );

    let newest = client
        .list(
            "dora",
            &JobFilter {
                last: Some(7),
                ..Default::default()
            },
        )
        .await
        .expect("list LAST=7");
    assert_eq!(
        newest.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        created[..7]
    );
}

#[tokio::test]
async fn the_client_reads_the_recent_runs_of_completed_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key).expect("client");
    assert!(client.recent_runs(10).await.expect("no history").is_empty());
    let job = client.create(new_job("erin", 0)).await.expect("create");
    let start = timestamp::now();
    client
        .transition(&job.id, Transition::Queue, start)
        .await
        .expect("queue");
    client
        .transition(&job.id, Transition::Start, start)
        .await
        .expect("start");
    client
        .transition(
            &job.id,
            Transition::Complete(Vec::new()),
            start + Duration::from_millis(2500),
        )
        .await
        .expect("complete");
    assert_eq!(
        client.recent_runs(10).await.expect("runs"),
        vec![uws::store::RecentRun {
            run_time: Duration::from_millis(2500),
            result_bytes: Some(0),
        }]
    );
}
