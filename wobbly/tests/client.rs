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
        id: uws::JobId::random(),
        owner: owner.into(),
        run_id: None,
        parameters: vec![("ID".into(), "butler://demo/a".into())],
        execution_duration: 60,
        destruction: now + Duration::from_secs(3600),
        creation_time: now,
        queued: false,
        sync: false,
        admission: uws::Admission::default(),
        progress: None,
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
        created.push(
            client
                .create(new_job("dora", i))
                .await
                .expect("create")
                .job()
                .id,
        );
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
async fn a_job_created_with_its_size_holds_it_through_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key).expect("client");
    let size = uws::Progress(vec![uws::ProgressCount {
        name: "shards".into(),
        done: 0,
        total: 4,
    }]);
    let job = client
        .create(NewJob {
            progress: Some(size.clone()),
            ..new_job("erin", 0)
        })
        .await
        .expect("create")
        .job();
    assert_eq!(job.progress.as_ref(), Some(&size));
    let read = client.get(&job.id).await.expect("get").expect("job");
    assert_eq!(read.progress, Some(size));
}

#[tokio::test]
async fn the_client_reads_the_recent_runs_of_completed_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key).expect("client");
    assert!(client.recent_runs(10).await.expect("no history").is_empty());
    let job = client
        .create(new_job("erin", 0))
        .await
        .expect("create")
        .job();
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

#[tokio::test]
async fn the_client_finds_jobs_whose_results_expired_and_archives_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key).expect("client");
    let job = client
        .create(new_job("fay", 0))
        .await
        .expect("create")
        .job();
    let ended = timestamp::now() - Duration::from_secs(120);
    for transition in [
        Transition::Queue,
        Transition::Start,
        Transition::Complete(vec![uws::JobResult {
            id: "result".into(),
            key: format!("{}/a.fits", job.id),
            mime_type: "application/fits".into(),
            size: Some(2880),
        }]),
    ] {
        client
            .transition(&job.id, transition, ended)
            .await
            .expect("transition");
    }
    let minute_ago = timestamp::now() - Duration::from_secs(60);
    assert_eq!(
        client.results_expired(minute_ago, 10).await.expect("ended"),
        std::slice::from_ref(&job.id)
    );
    let archived = client
        .transition(&job.id, Transition::Archive, timestamp::now())
        .await
        .expect("archive");
    assert_eq!(archived.phase, uws::ExecutionPhase::Archived);
    assert!(archived.results.is_empty());
    assert!(
        client
            .results_expired(minute_ago, 10)
            .await
            .expect("ended")
            .is_empty()
    );
}

/// A raw request to the service with `token`: (status, body).
async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Issue 18 item 7: a token confined to one user lists no other user's job IDs (the
/// service-wide routes refuse it), sets no time, and nobody completes a job with result keys
/// outside the job's own prefix.
#[tokio::test]
async fn a_user_token_is_confined_to_its_user_and_sets_no_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let client = WobblyClient::new(&base, "client-test", key.clone()).expect("client");
    let bobs = client.create(new_job("bob", 0)).await.expect("bob").job();
    let alice = key.issue("client-test", Some("alice"), 60).expect("token");

    for route in [
        "/v1/expired?limit=10",
        "/v1/results-expired?limit=10&now=2100-01-01T00:00:00Z",
        "/v1/active?limit=10&phases=PENDING",
    ] {
        let (status, body) =
            call(reqwest::Method::GET, format!("{base}{route}"), &alice, None).await;
        assert_eq!(status, 403, "{route}: {body}");
        assert!(!body.contains(bobs.id.as_str()), "{route}: {body}");
    }

    // Backdated, never destroyed, never timed out: none of it is believed from a user token.
    let before = timestamp::now();
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{base}/v1/jobs"),
        &alice,
        Some(serde_json::json!({
            "owner": "bob",
            "run_id": null,
            "parameters": [["ID", "butler://demo/a"]],
            "execution_duration": 0,
            "destruction": "9999-01-01T00:00:00.000Z",
            "creation_time": "2000-01-01T00:00:00.000Z",
            "queued": true
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let job = client
        .get(&uws::JobId::parse(&id).expect("id"))
        .await
        .expect("get")
        .expect("job");
    let defaults = uws::service::JobLimits::default();
    assert_eq!(job.owner, "alice");
    assert!(job.creation_time >= before - Duration::from_secs(1));
    assert!(job.destruction <= timestamp::now() + defaults.default_lifetime);
    assert_eq!(job.execution_duration, defaults.default_execution_duration);

    let (status, body) = call(
        reqwest::Method::PATCH,
        format!("{base}/v1/jobs/{id}"),
        &alice,
        Some(serde_json::json!({"destruction": "9999-01-01T00:00:00.000Z"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // The transition instant comes from the server's clock too.
    let (status, body) = call(
        reqwest::Method::POST,
        format!("{base}/v1/jobs/{id}/transition"),
        &alice,
        Some(serde_json::json!({"transition": {"to": "start"}, "at": "2000-01-01T00:00:00.000Z"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started = client
        .get(&job.id)
        .await
        .expect("get")
        .expect("job")
        .start_time
        .expect("start time");
    assert!(started >= before - Duration::from_secs(1));

    // Result keys under another job's prefix, or climbing out of this one, are refused.
    for key in [
        format!("{}/x/cutout.fits", bobs.id),
        format!("{id}/../{}/cutout.fits", bobs.id),
        id.clone(),
        "cutout.fits".to_owned(),
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{base}/v1/jobs/{id}/transition"),
            &alice,
            Some(serde_json::json!({
                "transition": {"to": "complete", "results": [
                    {"id": "cutout", "key": key, "mime_type": "application/fits"}
                ]},
                "at": timestamp::format(timestamp::now())
            })),
        )
        .await;
        assert_eq!(status, 400, "{key}: {body}");
    }
    let job = client.get(&job.id).await.expect("get").expect("job");
    assert_eq!(job.phase, uws::ExecutionPhase::Executing);
    let own = uws::JobResult {
        id: "cutout".into(),
        key: format!("{id}/0123/cutout.fits"),
        mime_type: "application/fits".into(),
        size: Some(1),
    };
    let done = client
        .transition(
            &job.id,
            Transition::Complete(vec![own.clone()]),
            timestamp::now(),
        )
        .await
        .expect("complete under the job's own prefix");
    assert_eq!(done.results, vec![own]);

    // Bob's job stays invisible to the token, as before.
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{base}/v1/jobs/{}", bobs.id),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// Forwards to `upstream`, one request per connection, and loses the answers of the first
/// `lose` requests whose request line starts with `prefix` (after the service has acted).
fn lossy_proxy(upstream: &str, prefix: &'static str, lose: usize) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let lose = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(lose));
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let mut reader = BufReader::new(client.try_clone().expect("clone"));
            let (mut head, mut first, mut length) = (String::new(), String::new(), 0);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if first.is_empty() {
                    first = line.clone();
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    head.push_str("connection: close\r\n\r\n");
                    break;
                }
                if !lower.starts_with("connection:") {
                    head.push_str(&line);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok();
            let mut service = std::net::TcpStream::connect(&upstream).expect("upstream");
            service.write_all(head.as_bytes()).expect("head");
            service.write_all(&body).expect("body");
            let mut answer = Vec::new();
            service.read_to_end(&mut answer).ok();
            let lost = first.starts_with(prefix)
                && lose
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
            if !lost {
                client.write_all(&answer).ok();
            }
            client.shutdown(std::net::Shutdown::Both).ok();
        }
    });
    url
}

/// A worker's start and completion whose answers are lost are repeated and count as done (the
/// job shows exactly them), while another worker's start of the same job is still refused; a
/// deletion whose answer is lost is done once.
#[tokio::test]
async fn transitions_and_deletions_whose_answers_are_lost_are_done_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TokenKey::new(b"client-test-key").expect("key");
    let base = serve(&dir, &key).await;
    let direct = WobblyClient::new(&base, "client-test", key.clone()).expect("client");
    let job = direct
        .create(NewJob {
            queued: true,
            sync: false,
            ..new_job("erin", 0)
        })
        .await
        .expect("create")
        .job();
    // Each client loses the answer of its first transition (or deletion) of the job.
    let lossy = |prefix: String| {
        let url = lossy_proxy(&base, Box::leak(prefix.into_boxed_str()), 1);
        WobblyClient::new(&url, "client-test", key.clone()).expect("client")
    };
    let transitions = format!("POST /v1/jobs/{}/transition ", job.id);
    let lossy_start = lossy(transitions.clone());
    let lossy_complete = lossy(transitions);
    let lossy_delete = lossy(format!("DELETE /v1/jobs/{} ", job.id));
    let at = timestamp::now();
    let started = lossy_start
        .transition(&job.id, Transition::Start, at)
        .await
        .expect("start, answer lost once");
    assert_eq!(started.phase, uws::ExecutionPhase::Executing);
    // Another worker, later: refused as before.
    let other = direct
        .transition(&job.id, Transition::Start, at + Duration::from_millis(5))
        .await;
    assert!(
        matches!(other, Err(uws::UwsError::IllegalTransition { .. })),
        "{other:?}"
    );
    let result = uws::JobResult {
        id: "cutout".into(),
        key: format!("{}/01/cutout.fits", job.id),
        mime_type: "application/fits".into(),
        size: Some(2880),
    };
    let done = lossy_complete
        .transition(
            &job.id,
            Transition::Complete(vec![result.clone()]),
            timestamp::now(),
        )
        .await
        .expect("complete, answer lost once");
    assert_eq!(done.phase, uws::ExecutionPhase::Completed);
    assert_eq!(done.results, vec![result.clone()]);
    // A late completion by someone else is still refused.
    let late = direct
        .transition(&job.id, Transition::Complete(vec![]), timestamp::now())
        .await;
    assert!(
        matches!(late, Err(uws::UwsError::IllegalTransition { .. })),
        "{late:?}"
    );

    assert_eq!(
        lossy_delete
            .delete(&job.id)
            .await
            .expect("delete, answer lost"),
        None
    );
    assert_eq!(direct.get(&job.id).await.expect("get"), None);
}
