//! [`SqliteWriter`]: every write to a SQLite job store goes through one connection, and writes
//! that arrive together are committed together (group commit).
//!
//! SQLite takes one writer at a time. Writers on separate pool connections that collide get
//! `SQLITE_BUSY`, and SQLite's busy handler then sleeps 1, 2, 5, 10 … ms before it retries, so a
//! few concurrent jobs made every write wait milliseconds for a lock that was free again after
//! microseconds. One writer task never collides with itself; while it commits one batch (an
//! fsync of the WAL) the next writes queue up and are committed in one transaction after it, so
//! one fsync serves many writes under load.
//!
//! # Durability
//!
//! Each write says whether it must be on disk before its caller hears it succeeded. A batch that
//! holds such a write commits with `synchronous=FULL` (the WAL is fsynced before `COMMIT`
//! returns); a batch of only non-durable writes commits with `synchronous=NORMAL` (the WAL is
//! written but fsynced only at the next FULL commit or checkpoint, which is safe from
//! corruption in WAL mode). The WAL is append-only, so a FULL commit makes every earlier commit
//! durable too: a non-durable write can be lost to a power failure only together with
//! everything after it up to the next durable write. The store decides which writes may be
//! non-durable (see `SqlJobStore::transition`).
//!
//! Reads do not come here: in WAL mode they run on the pool's other connections without waiting
//! for the writer, and see a write once its caller has been answered (the answer is sent after
//! the commit).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};
use uws::UwsError;

/// The most writes committed in one transaction; a bound on how long one commit holds the lock.
const MAX_BATCH: usize = 256;

/// A value bound to a statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
    OptReal(Option<f64>),
}

/// One statement that writes a row and returns it (`… RETURNING`), if there was one.
#[derive(Debug)]
pub(crate) struct Write {
    pub sql: String,
    pub binds: Vec<Bind>,
    /// True when the caller may tell a client about the write: it is fsynced before the answer.
    pub durable: bool,
    /// Statements run after this one when it returned a row, in the same transaction (their
    /// rows are ignored).
    pub then: Vec<(String, Vec<Bind>)>,
}

/// `sql` with `binds` bound in order.
fn query(
    sql: &str,
    binds: &[Bind],
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for bind in binds {
        query = match bind {
            Bind::Int(v) => query.bind(*v),
            Bind::OptInt(v) => query.bind(*v),
            Bind::Text(v) => query.bind(v.clone()),
            Bind::OptText(v) => query.bind(v.clone()),
            Bind::OptReal(v) => query.bind(*v),
        };
    }
    query
}

impl Write {
    /// Runs the statement, then its follow-ups if it returned a row, on `conn`, outside any
    /// batching. With follow-ups the caller must run it inside a transaction.
    pub(crate) async fn fetch_optional(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        let row = query(&self.sql, &self.binds)
            .fetch_optional(&mut *conn)
            .await?;
        if row.is_some() {
            for (sql, binds) in &self.then {
                query(sql, binds).execute(&mut *conn).await?;
            }
        }
        Ok(row)
    }
}

type Reply = Result<Option<AnyRow>, UwsError>;

/// Statements applied together, in one transaction; the reply carries the last one's row.
struct Request {
    writes: Vec<Write>,
    reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Runs every statement on `conn` (inside the caller's transaction, if any).
    async fn apply(&self, conn: &mut AnyConnection) -> Result<Option<AnyRow>, sqlx::Error> {
        let mut row = None;
        for write in &self.writes {
            row = write.fetch_optional(&mut *conn).await?;
        }
        Ok(row)
    }

    /// One statement with no follow-ups commits by itself.
    fn is_single_statement(&self) -> bool {
        self.writes.len() == 1 && self.writes[0].then.is_empty()
    }
}

/// The handle to the writer task; cloning shares the task, which ends when the last handle is
/// dropped.
#[derive(Clone, Debug)]
pub(crate) struct SqliteWriter {
    requests: mpsc::UnboundedSender<Request>,
}

impl SqliteWriter {
    /// Starts the writer task on the current Tokio runtime. It takes its own connection from
    /// `pool` (detached, so that the synchronous setting it changes never reaches a reader).
    pub(crate) fn start(pool: AnyPool) -> SqliteWriter {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, receiver));
        SqliteWriter { requests }
    }

    /// Applies one write, batched with whatever other writes are waiting, and answers after its
    /// commit.
    pub(crate) async fn write(&self, write: Write) -> Reply {
        self.write_all(vec![write]).await
    }

    /// Applies `writes` in order in one transaction (batched like any write), answering after
    /// its commit with the last statement's row.
    pub(crate) async fn write_all(&self, writes: Vec<Write>) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { writes, reply })
            .map_err(|_| UwsError::Store("the job-store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| UwsError::Store("the job-store writer has stopped".into()))?
    }
}

fn store_error(e: &sqlx::Error) -> UwsError {
    UwsError::Store(e.to_string())
}

/// The writer's connection and the synchronous setting it was last given.
struct WriterConnection {
    conn: AnyConnection,
    full: Option<bool>,
}

async fn run(pool: AnyPool, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut connection: Option<WriterConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match pool.acquire().await {
                Ok(conn) => connection.insert(WriterConnection {
                    conn: conn.detach(),
                    full: None,
                }),
                Err(e) => {
                    for request in batch.drain(..) {
                        let _ = request.reply.send(Err(store_error(&e)));
                    }
                    continue;
                }
            },
        };
        if let Err(e) = commit(conn, &mut batch).await {
            // The connection may be unusable (or left inside a transaction): open a fresh one
            // for the next batch.
            tracing::warn!(error = %e, "job-store writer connection reset");
            if let Some(old) = connection.take() {
                let _ = old.conn.close().await;
            }
        }
        batch.clear();
    }
}

/// Commits `batch` and answers every request in it. An error is returned only when the
/// connection itself failed (every request has been answered anyway).
async fn commit(conn: &mut WriterConnection, batch: &mut Vec<Request>) -> Result<(), sqlx::Error> {
    let durable = batch.iter().any(|r| r.writes.iter().any(|w| w.durable));
    if conn.full != Some(durable) {
        let pragma = if durable {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        if let Err(e) = sqlx::raw_sql(pragma).execute(&mut conn.conn).await {
            fail_all(batch, &e);
            return Err(e);
        }
        conn.full = Some(durable);
    }
    if batch.len() == 1 && batch[0].is_single_statement() {
        // One statement commits by itself: BEGIN and COMMIT would only add round trips.
        if let Some(request) = batch.pop() {
            let result = request.apply(&mut conn.conn).await;
            let _ = request.reply.send(result.map_err(|e| store_error(&e)));
        }
        return Ok(());
    }
    let mut tx = match conn.conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            fail_all(batch, &e);
            return Err(e);
        }
    };
    let mut rows = Vec::with_capacity(batch.len());
    let mut failed = false;
    for request in batch.iter() {
        match request.apply(&mut tx).await {
            Ok(row) => rows.push(row),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        // Some statements fail on their own (a constraint), some take the transaction with
        // them: roll the batch back and apply each write alone, so that only the failing one
        // fails and no caller is told a write failed that was committed.
        drop(rows);
        if let Err(e) = tx.rollback().await {
            fail_all(batch, &e);
            return Err(e);
        }
        for request in batch.drain(..) {
            let result = alone(&mut conn.conn, &request).await;
            let _ = request.reply.send(result.map_err(|e| store_error(&e)));
        }
        return Ok(());
    }
    match tx.commit().await {
        Ok(()) => {
            for (request, row) in batch.drain(..).zip(rows) {
                let _ = request.reply.send(Ok(row));
            }
            Ok(())
        }
        Err(e) => {
            fail_all(batch, &e);
            Err(e)
        }
    }
}

/// Applies one request by itself: in its own transaction when it has several statements.
async fn alone(conn: &mut AnyConnection, request: &Request) -> Result<Option<AnyRow>, sqlx::Error> {
    if request.is_single_statement() {
        return request.apply(conn).await;
    }
    let mut tx = conn.begin().await?;
    let row = request.apply(&mut tx).await?;
    tx.commit().await?;
    Ok(row)
}

fn fail_all(batch: &mut Vec<Request>, e: &sqlx::Error) {
    for request in batch.drain(..) {
        let _ = request.reply.send(Err(store_error(e)));
    }
}
