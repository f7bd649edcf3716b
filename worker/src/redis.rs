//! The job queue on Redis Streams: one stream per lane ([`Priority`]: sync, async, bulk), one
//! consumer group shared by every worker on every host. A worker takes from the first lane that
//! has an entry, so a user whose flood went to the bulk lane never delays anyone else's job.
//!
//! A worker reads an entry, runs the job, then acknowledges and deletes the entry. An entry whose
//! worker died stays pending in the group; once it has been idle longer than the visibility
//! timeout another worker claims it (`XAUTOCLAIM`). A live worker keeps its entries fresh with a
//! heartbeat (`XCLAIM … JUSTID` to itself resets the idle time), so long jobs are not stolen.
//!
//! The entry carries only the job ID, whether the job may be taken over from a dead worker, the
//! owner's delegated token if there is one, and for a shard of a bulk job its name; the job
//! store decides everything else. The token leaves Redis with the entry (`XDEL`) when the job
//! ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::Value;
use uws::queue::{DelegatedToken, JobQueue, Priority, QueuedJob};
use uws::{JobId, UwsError};

const GROUP: &str = "workers";

/// Connects a Redis client that reconnects by itself, with backoff, forever. A worker or
/// frontend started before Redis waits for it instead of crashing: the first connection is
/// retried with exponential backoff (each attempt logged at warn), and only a malformed URL fails.
pub async fn connect(url: &str) -> Result<Client, fred::error::Error> {
    let config = Config::from_url(url)?;
    let mut delay = FIRST_RETRY;
    let mut attempt: u32 = 1;
    loop {
        // A fresh client per attempt: one whose first connection failed is not reused.
        let client = Builder::from_config(config.clone())
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        match client.init().await {
            Ok(_) => return Ok(client),
            Err(e) => {
                tracing::warn!(
                    url = %redact(url),
                    attempt,
                    retry_in = %format!("{} ms", delay.as_millis()),
                    error = %describe(&e),
                    "Redis not reachable yet"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// `url` with its password (and user) replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://[redacted]{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A fred error as a sentence: fred keeps an I/O error as its Rust `Debug` text
/// (`Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }`), of which only
/// the message is for people.
pub fn describe(e: &fred::error::Error) -> String {
    let details = e.details();
    let message = details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(message, _)| message);
    match message {
        Some(message) => format!("{}: {message}", e.kind().to_str()),
        None => e.to_string(),
    }
}

/// The first wait before reconnecting to a Redis that was not reachable at start.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Waits stop growing here, so a Redis that comes back is found within this long.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Stream names under one key prefix, so several deployments (or tests) can share a Redis.
#[derive(Debug, Clone)]
pub struct Streams {
    prefix: String,
}

impl Streams {
    pub fn new(prefix: &str) -> Streams {
        Streams {
            prefix: prefix.to_owned(),
        }
    }

    pub fn stream(&self, priority: Priority) -> String {
        format!("{}:jobs:{}", self.prefix, priority.as_str())
    }

    /// Present while Redis still holds what Skycut wrote; its absence means Redis lost its data.
    pub fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Every phase change (frontends hear it: `WAIT`, sync requests, `/jobs/events`).
    pub fn events_channel(&self) -> String {
        format!("{}:phase", self.prefix)
    }

    /// Final phase changes only, published on [`Streams::events_channel`] too: what a worker
    /// needs to cancel a job, without hearing each job's QUEUED and EXECUTING.
    pub fn final_events_channel(&self) -> String {
        format!("{}:phase:final", self.prefix)
    }

    /// Progress reports of running jobs (frontends hear it, for `/jobs/events`; workers only
    /// publish on it).
    pub fn progress_channel(&self) -> String {
        format!("{}:progress", self.prefix)
    }

    /// Every key Skycut writes under this prefix (the channels are not keys).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Priority::ALL.iter().map(|p| self.stream(*p)).collect();
        keys.push(self.epoch_key());
        keys
    }

    fn priority_of(&self, stream: &str) -> Priority {
        Priority::ALL
            .into_iter()
            .find(|p| stream == self.stream(*p))
            .unwrap_or(Priority::Async)
    }
}

/// Deletes every key of `streams` (queue entries, consumer groups, the epoch marker), for a
/// deployment that ends for good, as the bench's does; returns how many existed.
pub async fn delete_keys(url: &str, streams: &Streams) -> Result<i64, fred::error::Error> {
    let client = Builder::from_config(Config::from_url(url)?)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        })
        .build()?;
    client.init().await?;
    let deleted: i64 = client.del(streams.keys()).await?;
    client.quit().await?;
    Ok(deleted)
}

fn redis_error(e: fred::error::Error) -> UwsError {
    UwsError::Queue(format!("redis: {e}"))
}

/// How recently a consumer must have taken or heartbeated an entry to count as a live worker
/// ([`JobQueue::workers`]), unless [`RedisQueue::counting_workers_seen_within`] says otherwise.
const WORKER_SEEN: Duration = Duration::from_secs(30);

/// The enqueueing side (frontends, and workers handing jobs back). Cloning shares the client.
#[derive(Clone)]
pub struct RedisQueue {
    client: Client,
    streams: Streams,
    worker_seen: Duration,
}

impl RedisQueue {
    pub fn new(client: Client, streams: Streams) -> RedisQueue {
        RedisQueue {
            client,
            streams,
            worker_seen: WORKER_SEEN,
        }
    }

    /// Counts as live workers the consumers seen within `within`: the visibility timeout, past
    /// which the queue presumes a worker dead (a running job's worker heartbeats every third
    /// of it).
    pub fn counting_workers_seen_within(mut self, within: Duration) -> RedisQueue {
        self.worker_seen = within;
        self
    }

    /// Adds a job; `takeover` lets the worker take a job that the store says is EXECUTING (its
    /// worker or its queue entry is gone).
    pub async fn add(&self, job: &QueuedJob, takeover: bool) -> Result<(), UwsError> {
        let mut fields = vec![
            ("id", job.id.as_str()),
            ("takeover", if takeover { "1" } else { "0" }),
        ];
        if let Some(token) = &job.token {
            fields.push(("token", token.secret()));
        }
        if let Some(shard) = &job.shard {
            fields.push(("shard", shard.as_str()));
        }
        let _: String = self
            .client
            .xadd(self.streams.stream(job.priority), false, None, "*", fields)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// True when the Redis server answers.
    pub async fn ping(&self) -> bool {
        self.client.ping::<String>(None).await.is_ok()
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError> {
        self.add(&job, false).await
    }

    async fn depth(&self) -> Result<u64, UwsError> {
        let mut total = 0;
        for priority in Priority::ALL {
            let n: u64 = self
                .client
                .xlen(self.streams.stream(priority))
                .await
                .map_err(redis_error)?;
            total += n;
        }
        Ok(total)
    }

    /// The age of the oldest entry in any stream, read from its ID (milliseconds since the
    /// epoch on the Redis server's clock, compared with this host's).
    async fn oldest_age(&self) -> Result<Option<Duration>, UwsError> {
        let mut oldest: Option<u64> = None;
        for priority in Priority::ALL {
            let first: Value = self
                .client
                .xrange(self.streams.stream(priority), "-", "+", Some(1))
                .await
                .map_err(redis_error)?;
            if let Some(ms) = first_entry_millis(&first) {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        }
        let Some(ms) = oldest else {
            return Ok(None);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Some(now.saturating_sub(Duration::from_millis(ms))))
    }

    /// The consumers of the workers' group, on any lane, that took or heartbeated an entry
    /// within the visibility timeout (`XINFO CONSUMERS`, whose `idle` counts from the last
    /// entry a consumer read or claimed; from Redis 7.2 also from its last empty read). A
    /// worker that waits on an empty queue of an older Redis goes uncounted, which only makes a
    /// quote later; a busy worker heartbeats and is counted.
    async fn workers(&self) -> Result<Option<u64>, UwsError> {
        let within = u64::try_from(self.worker_seen.as_millis()).unwrap_or(u64::MAX);
        let mut seen = std::collections::HashSet::new();
        for priority in Priority::ALL {
            let info: Result<Value, _> = self
                .client
                .xinfo_consumers(self.streams.stream(priority), GROUP)
                .await;
            match info {
                Ok(info) => seen.extend(consumers_seen_within(&info, within)),
                // No stream or no group yet: no worker has read this lane.
                Err(e)
                    if e.details().contains("NOGROUP") || e.details().contains("no such key") => {}
                Err(e) => return Err(redis_error(e)),
            }
        }
        Ok(Some(seen.len() as u64))
    }
}

/// The consumers of an `XINFO CONSUMERS` answer (one array of `name`, `pending`, `idle`, …
/// pairs per consumer, or one map each over RESP3) idle for less than `within` milliseconds.
fn consumers_seen_within(info: &Value, within: u64) -> Vec<String> {
    let Value::Array(consumers) = info else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|consumer| {
            let fields: Vec<(String, &Value)> = match consumer {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|kv| Some((kv.first()?.as_string()?, kv.get(1)?)))
                    .collect(),
                Value::Map(map) => map
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                    .collect(),
                _ => return None,
            };
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let idle = field("idle")?.as_u64()?;
            (idle < within)
                .then(|| field("name")?.as_string())
                .flatten()
        })
        .collect()
}

/// The millisecond part of the first entry ID in an `XRANGE` answer (`[[ID, [field, value…]]]`).
fn first_entry_millis(range: &Value) -> Option<u64> {
    let Value::Array(entries) = range else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    let id = entry.first()?.as_string()?;
    id.split_once('-')?.0.parse().ok()
}

/// One queue entry handed to a worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job: QueuedJob,
    /// The stream entry, acknowledged when the job is done.
    pub entry: String,
    /// The job may be EXECUTING in the store: its previous worker died or Redis lost its data.
    pub takeover: bool,
}

/// The consuming side of one worker process.
pub struct RedisConsumer {
    /// Used only for blocking reads, which hold their connection while they wait.
    reader: Client,
    commands: Client,
    streams: Streams,
    consumer: String,
    visibility: Duration,
    /// Entries a blocking read delivered beyond the one it returned (it reads every lane, so
    /// several can come at once): already this consumer's, handed out before the next read.
    delivered: Mutex<VecDeque<Delivery>>,
}

impl RedisConsumer {
    pub fn new(
        reader: Client,
        commands: Client,
        streams: Streams,
        consumer: String,
        visibility: Duration,
    ) -> RedisConsumer {
        RedisConsumer {
            reader,
            commands,
            streams,
            consumer,
            visibility,
            delivered: Mutex::new(VecDeque::new()),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Creates the consumer group on every stream if missing (after a Redis restart too). The
    /// group starts at the beginning, so entries added before it existed are delivered.
    pub async fn ensure_groups(&self) -> Result<(), UwsError> {
        for priority in Priority::ALL {
            let created: Result<(), _> = self
                .commands
                .xgroup_create(self.streams.stream(priority), GROUP, "0", true)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.details().contains("BUSYGROUP") => {}
                Err(e) => return Err(redis_error(e)),
            }
        }
        Ok(())
    }

    /// The next job of `lanes`: an entry a previous read already delivered, else a new entry of
    /// the first lane that has one, else an entry abandoned by a dead worker, else (waiting up
    /// to `block`) a new entry of any of them, the first lane's first.
    pub async fn next(
        &self,
        block: Duration,
        lanes: &[Priority],
    ) -> Result<Option<Delivery>, UwsError> {
        let buffered = self.delivered.lock().ok().and_then(|mut q| {
            let at = q.iter().position(|d| lanes.contains(&d.job.priority))?;
            q.remove(at)
        });
        if let Some(d) = buffered {
            return Ok(Some(d));
        }
        match self.next_inner(block, lanes).await {
            Err(UwsError::Queue(m)) if m.contains("NOGROUP") => {
                // Redis lost the streams: recreate the groups and read again next time.
                self.ensure_groups().await?;
                Ok(None)
            }
            other => other,
        }
    }

    async fn next_inner(
        &self,
        block: Duration,
        lanes: &[Priority],
    ) -> Result<Option<Delivery>, UwsError> {
        let streams: Vec<String> = Priority::ALL
            .into_iter()
            .filter(|p| lanes.contains(p))
            .map(|p| self.streams.stream(p))
            .collect();
        for stream in &streams {
            if let Some(d) = self.read(&self.commands, &[stream.as_str()], None).await? {
                return Ok(Some(d));
            }
        }
        for stream in &streams {
            if let Some(d) = self.reclaim(stream).await? {
                return Ok(Some(d));
            }
        }
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let all: Vec<&str> = streams.iter().map(String::as_str).collect();
        if all.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(None);
        }
        self.read(&self.reader, &all, Some(block_ms)).await
    }

    async fn read(
        &self,
        client: &Client,
        streams: &[&str],
        block_ms: Option<u64>,
    ) -> Result<Option<Delivery>, UwsError> {
        let ids: Vec<&str> = streams.iter().map(|_| ">").collect();
        let keys: Vec<String> = streams.iter().map(|s| (*s).to_owned()).collect();
        let response: Value = client
            .xreadgroup(
                GROUP,
                self.consumer.as_str(),
                Some(1),
                block_ms,
                false,
                keys,
                ids,
            )
            .await
            .map_err(redis_error)?;
        // [[stream, [[entry-id, [field, value, …]], …]], …], or nil when nothing came.
        let Value::Array(per_stream) = response else {
            return Ok(None);
        };
        let mut got: Vec<Delivery> = Vec::new();
        for item in &per_stream {
            let Value::Array(pair) = item else { continue };
            let (Some(stream), Some(entries)) =
                (pair.first().and_then(Value::as_string), pair.get(1))
            else {
                continue;
            };
            for (entry, fields) in parse_entries(entries) {
                got.extend(self.delivery(&stream, entry, &fields, false));
            }
        }
        // Every entry read is now pending for this consumer: the first lane's is returned, the
        // others wait here for the next call instead of idling until the visibility timeout.
        got.sort_by_key(|d| Priority::ALL.iter().position(|p| *p == d.job.priority));
        let mut got = got.into_iter();
        let first = got.next();
        if let Ok(mut delivered) = self.delivered.lock() {
            delivered.extend(got);
        }
        Ok(first)
    }

    fn delivery(
        &self,
        stream: &str,
        entry: String,
        fields: &HashMap<String, String>,
        reclaimed: bool,
    ) -> Option<Delivery> {
        let id = fields.get("id").and_then(|id| JobId::parse(id).ok());
        let Some(id) = id else {
            tracing::warn!(stream, entry, "malformed queue entry ignored");
            return None;
        };
        Some(Delivery {
            job: QueuedJob {
                id,
                priority: self.streams.priority_of(stream),
                token: fields.get("token").map(|t| DelegatedToken::new(t.as_str())),
                shard: fields.get("shard").cloned(),
            },
            entry,
            takeover: reclaimed || fields.get("takeover").is_some_and(|t| t == "1"),
        })
    }

    /// Claims one entry that has been pending longer than the visibility timeout.
    async fn reclaim(&self, stream: &str) -> Result<Option<Delivery>, UwsError> {
        let min_idle = u64::try_from(self.visibility.as_millis()).unwrap_or(u64::MAX);
        let value: Value = self
            .commands
            .custom(
                fred::cmd!("XAUTOCLAIM"),
                vec![
                    stream.to_owned(),
                    GROUP.to_owned(),
                    self.consumer.clone(),
                    min_idle.to_string(),
                    "0-0".to_owned(),
                    "COUNT".to_owned(),
                    "1".to_owned(),
                ],
            )
            .await
            .map_err(redis_error)?;
        // [next-cursor, [[entry-id, [field, value, …]], …], [deleted-ids…]]
        let Value::Array(parts) = value else {
            return Ok(None);
        };
        let Some(entries) = parts.get(1) else {
            return Ok(None);
        };
        for (entry, fields) in parse_entries(entries) {
            if let Some(d) = self.delivery(stream, entry, &fields, true) {
                tracing::info!(job = %d.job.id, entry = %d.entry, "reclaimed a job from a dead worker");
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Resets the idle time of an entry this worker is still working on.
    pub async fn heartbeat(&self, d: &Delivery) -> Result<(), UwsError> {
        let _: Value = self
            .commands
            .xclaim(
                self.streams.stream(d.job.priority),
                GROUP,
                self.consumer.as_str(),
                0,
                d.entry.as_str(),
                None,
                None,
                None,
                false,
                true,
            )
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Acknowledges and deletes a finished entry.
    pub async fn ack(&self, d: &Delivery) -> Result<(), UwsError> {
        let stream = self.streams.stream(d.job.priority);
        let _: i64 = self
            .commands
            .xack(stream.as_str(), GROUP, d.entry.as_str())
            .await
            .map_err(redis_error)?;
        let _: i64 = self
            .commands
            .xdel(stream.as_str(), d.entry.as_str())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Sets the epoch marker if it is missing; true means Redis had lost (or never had) Skycut's
    /// data, and whoever got `true` must rebuild the queue from the job store.
    pub async fn claim_recovery(&self) -> Result<bool, UwsError> {
        let token = format!("{}", rand::random::<u64>());
        let set: Option<String> = self
            .commands
            .set(
                self.streams.epoch_key(),
                token,
                None,
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await
            .map_err(redis_error)?;
        Ok(set.is_some())
    }
}

impl RedisConsumer {
    /// Gives back a recovery claim whose rebuild failed (the job store did not answer), so that
    /// the next check, this worker's or another's, rebuilds the queue: a claim kept after a failed
    /// rebuild would leave the lost jobs QUEUED or EXECUTING forever.
    pub async fn release_recovery(&self) -> Result<(), UwsError> {
        let _: i64 = self
            .commands
            .del(self.streams.epoch_key())
            .await
            .map_err(redis_error)?;
        Ok(())
    }
}

/// Stream entries as Redis sends them: `[[entry-id, [field, value, …]], …]`. Entries deleted
/// while pending come back with nil fields and are skipped.
fn parse_entries(entries: &Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(pair) = entry else {
                return None;
            };
            let id = pair.first()?.as_string()?;
            let Value::Array(flat) = pair.get(1)? else {
                return None;
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.as_string()?, kv.get(1)?.as_string()?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_the_consumers_seen_within_the_visibility_timeout() {
        let consumer = |name: &str, idle: i64| {
            Value::Array(vec![
                Value::from("name"),
                Value::from(name),
                Value::from("pending"),
                Value::Integer(1),
                Value::from("idle"),
                Value::Integer(idle),
            ])
        };
        let info = Value::Array(vec![
            consumer("busy", 9_000),
            consumer("dead", 600_000),
            consumer("fresh", 0),
        ]);
        assert_eq!(consumers_seen_within(&info, 30_000), ["busy", "fresh"]);
        assert!(consumers_seen_within(&Value::Null, 30_000).is_empty());
    }

    #[test]
    fn connection_errors_are_told_as_sentences_without_secrets() {
        // ECONNREFUSED is 111 on Linux, where CI runs.
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            describe(&fred::error::Error::from(refused)),
            "IO Error: Connection refused"
        );
        assert_eq!(
            redact("redis://:hunter2@redis.example:6379/0"),
            "redis://[redacted]@redis.example:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
