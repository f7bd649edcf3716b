//! The job-store schema as an ordered list of migrations, written in the SQL that PostgreSQL and
//! SQLite share. Each migration runs once, in order, recorded in `wobbly_migrations`.

/// Applied in order; never edit one that has shipped, append a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "jobs",
        r#"
CREATE TABLE IF NOT EXISTS uws_job (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    owner TEXT NOT NULL,
    run_id TEXT,
    phase TEXT NOT NULL,
    quote BIGINT,
    creation_time BIGINT NOT NULL,
    start_time BIGINT,
    end_time BIGINT,
    execution_duration BIGINT NOT NULL,
    destruction BIGINT NOT NULL,
    parameters TEXT NOT NULL,
    results TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS uws_job_by_owner ON uws_job (service, owner, creation_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS uws_job_by_destruction ON uws_job (destruction);
CREATE INDEX IF NOT EXISTS uws_job_by_phase ON uws_job (phase, creation_time);
"#,
    ),
    // The bytes of a COMPLETED job's results, written with them, so that the `result_bytes`
    // quota sums a column instead of decoding every result list of the owner on each create.
    // Rows completed before this migration keep NULL and are summed from their JSON.
    (
        2,
        "result_bytes",
        "ALTER TABLE uws_job ADD COLUMN result_bytes BIGINT",
    ),
    // Fair share counts an owner's QUEUED jobs when it queues one; this keeps that count to the
    // queued rows (a partial index, which PostgreSQL and SQLite both have).
    (
        3,
        "queued_by_owner",
        "CREATE INDEX IF NOT EXISTS uws_job_queued_by_owner ON uws_job (service, owner) \
         WHERE phase = 'QUEUED'",
    ),
    // Admission (issue 18): the bytes a job's results are planned to take, reserved against the
    // owner's result_bytes quota while it is unfinished; and a ledger of creations for
    // jobs_per_hour that deleting a job does not touch (kept only while that limit is set,
    // pruned to the last hour of each owner as it admits a job).
    (
        5,
        "admission",
        r#"
ALTER TABLE uws_job ADD COLUMN planned_bytes BIGINT;
CREATE TABLE IF NOT EXISTS uws_job_creation (
    service TEXT NOT NULL,
    owner TEXT NOT NULL,
    creation_time BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS uws_job_creation_by_owner ON uws_job_creation (service, owner, creation_time);
"#,
    ),
    // The sky index (`crate::sky`): one row per image HDU, and the HEALPix cells (NUNIQ) that
    // cover each footprint, so that "which images cover this point" is one indexed lookup of a
    // few cells. Numbers 4 and 5 belong to other branches; migrations are applied by number.
    (
        6,
        "sky_index",
        r#"
CREATE TABLE IF NOT EXISTS sky_image (
    id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    file TEXT NOT NULL,
    file_size BIGINT NOT NULL,
    file_mtime BIGINT NOT NULL,
    problem TEXT,
    nx BIGINT,
    ny BIGINT,
    s_ra DOUBLE PRECISION,
    s_dec DOUBLE PRECISION,
    s_radius DOUBLE PRECISION,
    s_region TEXT,
    t_min DOUBLE PRECISION,
    t_max DOUBLE PRECISION,
    em_min DOUBLE PRECISION,
    em_max DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS sky_image_by_file ON sky_image (collection, file);
CREATE TABLE IF NOT EXISTS sky_cell (
    cell BIGINT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (cell, image_id)
);
CREATE INDEX IF NOT EXISTS sky_cell_by_image ON sky_cell (image_id);
"#,
    ),
    // How far an executing job has come (`uws::Progress::encode`), as its worker last said.
    (
        7,
        "progress",
        "ALTER TABLE uws_job ADD COLUMN progress TEXT",
    ),
    // ARCHIVED (issue 17): the result sweeper looks for COMPLETED jobs by end time, which this
    // keeps to the COMPLETED rows of a service (a partial index, as number 3).
    (
        8,
        "completed_by_end",
        "CREATE INDEX IF NOT EXISTS uws_job_completed_by_end ON uws_job (service, end_time) \
         WHERE phase = 'COMPLETED'",
    ),
];
