//! The command line as an operator meets it: `--listen` of each distributed role, the warnings a
//! role gives about a setting that will not work, configuration typos (file and environment
//! alike), `skycut migrate` in an empty directory and a tiny `skycut bench --control-plane`.

use std::net::TcpListener;
use std::process::{Command, Output};

use crate::common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Runs `skycut ARGS` to the end in `dir` with only the `env` settings (no caller's `SKYCUT_*`).
fn run_skycut_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skycut"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SKYCUT_") {
            command.env_remove(k);
        }
    }
    command
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .output()
        .expect("run skycut")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn listen_sets_the_port_of_wobbly_and_of_the_worker_and_each_warns_of_what_will_not_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let scope = format!("t{:032x}", rand_u128());
    let missing = dir.path().join("no-such-images");
    let mut env: Vec<(String, String)> = [
        (
            "SKYCUT_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("SKYCUT_SIGNING_KEY", format!("{:064x}", rand_u128())),
        ("SKYCUT_REDIS_URL", redis_url()),
        ("SKYCUT_REDIS_PREFIX", scope.clone()),
        ("SKYCUT_SERVICE_NAME", scope.clone()),
        ("SKYCUT_WOBBLY__TOKEN_KEY", format!("{:064x}", rand_u128())),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    // wobbly without database_url: SQLite in data_dir, with a warning; --listen is its port.
    let wobbly_addr = format!("127.0.0.1:{}", free_port());
    let (mut wobbly, line) =
        start_process(&["wobbly", "--listen", &wobbly_addr], &env, Some(&logs));
    assert_eq!(
        line.trim(),
        format!("skycut wobbly listening on http://{wobbly_addr}")
    );
    env.push((
        "SKYCUT_WOBBLY__URL".to_owned(),
        format!("http://{wobbly_addr}"),
    ));

    // A worker's --listen is its health and metrics port; a missing repository is named.
    let worker_addr = format!("127.0.0.1:{}", free_port());
    let repository = format!("gone={}", missing.display());
    let (mut worker, line) = start_process(
        &[
            "worker",
            "--listen",
            &worker_addr,
            "--repository",
            &repository,
        ],
        &env,
        Some(&logs),
    );
    assert!(
        line.trim()
            .ends_with(&format!("ready; health on http://{worker_addr}")),
        "{line}"
    );
    let r = reqwest::blocking::get(format!("http://{worker_addr}/healthz")).expect("healthz");
    assert_eq!(r.status(), 200);

    let _ = worker.kill();
    let _ = worker.wait();
    let _ = wobbly.kill();
    let _ = wobbly.wait();
    let mut all = String::new();
    for entry in std::fs::read_dir(&logs).expect("logs") {
        let path = entry.expect("entry").path();
        let log = std::fs::read_to_string(&path).expect("log");
        let name = path.display().to_string();
        if name.ends_with("wobbly.log") {
            assert!(log.contains("database_url is not set"), "{log}");
        } else {
            assert!(
                log.contains("repository directory does not exist") && log.contains("gone"),
                "{log}"
            );
        }
        all.push_str(&log);
    }
    assert!(all.lines().count() >= 2, "{all}");
}

#[test]
fn a_typo_in_the_environment_is_an_error_worded_as_one_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[jobs]\nmax_wait = 30\n").expect("write");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[jobs]\nmax_waitt = 30\n").expect("write");
    let good_arg = good.display().to_string();
    let bad_arg = bad.display().to_string();

    let out = run_skycut_in(dir.path(), &["config", "check", &good_arg], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("is a valid configuration"),
        "{out:?}"
    );

    let out = run_skycut_in(dir.path(), &["config", "check", &bad_arg], &[]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("invalid configuration in {bad_arg}")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `max_waitt`"), "{stderr}");

    // The same typo in the environment, for a role as for the checker.
    for args in [
        vec!["config", "check", good_arg.as_str()],
        vec!["migrate", "--database-url", "sqlite://x.sqlite?mode=rwc"],
    ] {
        let out = run_skycut_in(dir.path(), &args, &[("SKYCUT_JOBS__MAX_WAITT", "30")]);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("invalid configuration in environment variable SKYCUT_JOBS__MAX_WAITT"),
            "{stderr}"
        );
        assert!(stderr.contains("unknown field `max_waitt`"), "{stderr}");
    }
    assert!(!dir.path().join("x.sqlite").exists(), "migrate ran anyway");
}

#[test]
fn migrate_in_an_empty_directory_creates_the_data_directory_and_says_what_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_skycut_in(dir.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{out:?}");
    let n = wobbly::schema::MIGRATIONS.len();
    assert_eq!(
        text(&out.stdout).trim(),
        format!("job store migrated: {n} migrations applied")
    );
    assert!(dir.path().join("skycut-data/jobs.sqlite").is_file());
    let out = run_skycut_in(dir.path(), &["migrate"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "job store was already up to date");
}

#[test]
fn bench_control_plane_prints_every_cost_and_every_simulation_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (postgres, redis) = (postgres_url(), redis_url());
    let out = run_skycut_in(
        dir.path(),
        &[
            "bench",
            "--control-plane",
            "--postgres-url",
            &postgres,
            "--redis-url",
            &redis,
            "--cp-jobs",
            "6",
            "--cp-cost-clients",
            "2",
            "--cp-bulk-jobs",
            "2",
            "--cp-workers",
            "2",
            "--cp-worker-concurrency",
            "1",
            "--cp-replicas",
            "1,2",
            "--cp-clients",
            "2",
            "--cp-seconds",
            "1",
            // The PostgreSQL figures may come out incomplete; only the table's shape is checked.
            "--cp-settle-seconds",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let rows = |prefix: &str| -> Vec<Vec<String>> {
        stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_owned())
                    .collect()
            })
            .collect()
    };
    // The cost table: a column per kind of job, a figure in every cell.
    let header = &rows("| per job |")[0];
    assert_eq!(header.len(), 4, "{stdout}");
    for (cell, kind) in header[1..].iter().zip(["sync", "async", "bulk"]) {
        assert!(cell.starts_with(kind), "{stdout}");
    }
    for name in [
        "CPU ms: load generator (bench)",
        "CPU ms: frontend",
        "CPU ms: wobbly",
        "CPU ms: workers",
        "CPU ms: PostgreSQL backends of wobbly",
        "CPU ms: PostgreSQL background",
        "CPU ms: Redis",
        "CPU ms: all of this run's processes",
        "HTTP requests to wobbly",
        "job-store calls of the frontend",
        "job-store calls of the workers",
        "PostgreSQL transactions",
        "Redis commands",
    ] {
        let row = rows(&format!("| {name} |"));
        assert_eq!(row.len(), 1, "no row {name}: {stdout}");
        assert_eq!(row[0].len(), 4, "{name}: {stdout}");
        assert!(
            row[0][1..].iter().all(|c| !c.is_empty()),
            "{name}: {stdout}"
        );
    }
    // Every job was counted: the frontend asked wobbly something for each.
    let requests = &rows("| HTTP requests to wobbly |")[0];
    for cell in &requests[1..] {
        assert!(cell.parse::<f64>().expect("a number") > 0.0, "{stdout}");
    }
    // The simulation: one row per replica count and client count, and its maximum with the
    // model's prediction.
    for replicas in ["1", "2"] {
        let step = rows(&format!("| {replicas} | 2 |"));
        assert_eq!(step.len(), 1, "{stdout}");
        assert!(
            stdout.contains(&format!(
                "maximum with {replicas} wobbly + {replicas} frontend(s): "
            )),
            "{stdout}"
        );
    }
    assert_eq!(stdout.matches("measured/model").count(), 2, "{stdout}");
}
