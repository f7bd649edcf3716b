//! Phase events over Redis pub/sub, so a frontend's `WAIT` wakes when a worker on another host
//! moves the job. Each process forwards the channel it hears into a local broadcast that
//! [`uws::events::PhaseEvents::subscribe`] hands out.
//!
//! Every change goes to the events channel, and a final one to the final-events channel too: a
//! worker hears only the latter (it cancels a job on a final phase and needs nothing else), so
//! a job's QUEUED and EXECUTING are delivered to the frontends alone, not to every worker (each
//! delivery costs Redis and the hearing process CPU, and there are many more workers).
//!
//! Progress reports (a bulk job's worker records one every two seconds) go to a channel of
//! their own, which only frontends hear (for `/jobs/events`), and come out of
//! [`PhaseEvents::subscribe_progress`], never out of [`PhaseEvents::subscribe`]: a progress
//! report is no phase change and must not wake a `WAIT`.

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::broadcast;
use uws::events::{PhaseChange, PhaseEvents, ProgressChange};
use uws::{ExecutionPhase, JobId, Progress};

use crate::redis::Streams;

/// Which phase changes a process hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hearing {
    /// Every change, and progress reports (a frontend).
    Every,
    /// Final phases only (a worker, which cancels a job on one).
    FinalOnly,
}

/// Publishes to the channels and listens on those of its [`Hearing`]. Cloning shares the
/// connections.
#[derive(Clone)]
pub struct RedisPhaseEvents {
    publisher: Client,
    channel: String,
    final_channel: String,
    progress_channel: String,
    local: broadcast::Sender<PhaseChange>,
    local_progress: broadcast::Sender<ProgressChange>,
}

impl RedisPhaseEvents {
    /// Subscribes to the channel of `hearing` (resubscribing by itself after a reconnect) and
    /// forwards what arrives to local subscribers.
    pub async fn start(
        publisher: Client,
        url: &str,
        streams: &Streams,
        hearing: Hearing,
    ) -> Result<RedisPhaseEvents, fred::error::Error> {
        let (channel, final_channel) = (streams.events_channel(), streams.final_events_channel());
        let progress_channel = streams.progress_channel();
        let heard = match hearing {
            Hearing::Every => vec![channel.clone(), progress_channel.clone()],
            Hearing::FinalOnly => vec![final_channel.clone()],
        };
        let subscriber: SubscriberClient = Builder::from_config(Config::from_url(url)?)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        subscriber.subscribe(heard).await?;
        let (local, _) = broadcast::channel(4096);
        let (local_progress, _) = broadcast::channel(1024);
        let forward = local.clone();
        let forward_progress = local_progress.clone();
        let progress_heard = progress_channel.clone();
        let mut messages = subscriber.message_rx();
        tokio::spawn(async move {
            // Keeps the subscriber client alive as long as the forwarding task runs.
            let _subscriber = subscriber;
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let text = message.value.as_string();
                        let text = text.as_deref();
                        if *message.channel == *progress_heard {
                            if let Some(change) = text.and_then(decode_progress) {
                                let _ = forward_progress.send(change);
                            }
                        } else if let Some(change) = text.and_then(decode) {
                            let _ = forward.send(change);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(RedisPhaseEvents {
            publisher,
            channel,
            final_channel,
            progress_channel,
            local,
            local_progress,
        })
    }
}

/// The channels a change goes to: the events channel, and the final-events channel too for a
/// final phase.
fn channels<'a>(phase: ExecutionPhase, channel: &'a str, final_channel: &'a str) -> Vec<&'a str> {
    if phase.is_final() {
        vec![channel, final_channel]
    } else {
        vec![channel]
    }
}

/// `ID PHASE OWNER`: the owner last, since it is the only part that may contain spaces.
fn encode(change: &PhaseChange) -> String {
    format!("{} {} {}", change.id, change.phase, change.owner)
}

fn decode(text: &str) -> Option<PhaseChange> {
    let mut parts = text.splitn(3, ' ');
    let id = JobId::parse(parts.next()?).ok()?;
    let phase = parts.next()?.parse::<ExecutionPhase>().ok()?;
    let owner = parts.next()?.to_owned();
    Some(PhaseChange { id, owner, phase })
}

/// `ID OWNER`, then the progress as the store keeps it ([`Progress::encode`]) on the lines
/// after: an owner never spans lines, a progress count is one line.
fn encode_progress(change: &ProgressChange) -> String {
    format!(
        "{} {}\n{}",
        change.id,
        change.owner,
        change.progress.encode()
    )
}

fn decode_progress(text: &str) -> Option<ProgressChange> {
    let (first, counts) = text.split_once('\n')?;
    let (id, owner) = first.split_once(' ')?;
    Some(ProgressChange {
        id: JobId::parse(id).ok()?,
        owner: owner.to_owned(),
        progress: Progress::decode(counts)?,
    })
}

/// Publishes `text` on `channels` in the background: an event is a hint, and a lost one costs
/// a waiter a fallback re-read (a progress stream: one report of many), not correctness.
fn publish_on(publisher: &Client, channels: Vec<String>, text: String) {
    let publisher = publisher.clone();
    tokio::spawn(async move {
        for channel in channels {
            let sent: Result<i64, _> = publisher.publish(channel, text.as_str()).await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "event not published");
            }
        }
    });
}

impl PhaseEvents for RedisPhaseEvents {
    fn publish(&self, change: PhaseChange) {
        let channels: Vec<String> = channels(change.phase, &self.channel, &self.final_channel)
            .into_iter()
            .map(str::to_owned)
            .collect();
        publish_on(&self.publisher, channels, encode(&change));
    }

    fn subscribe(&self) -> broadcast::Receiver<PhaseChange> {
        self.local.subscribe()
    }

    fn publish_progress(&self, change: ProgressChange) {
        publish_on(
            &self.publisher,
            vec![self.progress_channel.clone()],
            encode_progress(&change),
        );
    }

    fn subscribe_progress(&self) -> broadcast::Receiver<ProgressChange> {
        self.local_progress.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_survives_the_wire_with_spaces_in_the_owner() {
        let change = PhaseChange {
            id: JobId::random(),
            owner: "Ada Lovelace".to_owned(),
            phase: ExecutionPhase::Completed,
        };
        assert_eq!(decode(&encode(&change)), Some(change));
    }

    #[test]
    fn only_a_final_phase_goes_to_the_final_events_channel_too() {
        for phase in [
            ExecutionPhase::Pending,
            ExecutionPhase::Queued,
            ExecutionPhase::Executing,
        ] {
            assert_eq!(channels(phase, "p:phase", "p:phase:final"), ["p:phase"]);
        }
        for phase in [
            ExecutionPhase::Completed,
            ExecutionPhase::Error,
            ExecutionPhase::Aborted,
            ExecutionPhase::Archived,
        ] {
            assert_eq!(
                channels(phase, "p:phase", "p:phase:final"),
                ["p:phase", "p:phase:final"]
            );
        }
    }

    #[test]
    fn a_progress_report_survives_the_wire() {
        let change = ProgressChange {
            id: JobId::random(),
            owner: "Ada Lovelace".to_owned(),
            progress: Progress(vec![
                uws::ProgressCount {
                    name: "stamps".to_owned(),
                    done: 1500,
                    total: 100_000,
                },
                uws::ProgressCount {
                    name: "shards".to_owned(),
                    done: 0,
                    total: 3,
                },
            ]),
        };
        assert_eq!(decode_progress(&encode_progress(&change)), Some(change));
        assert_eq!(decode_progress("not-a-job someone\nstamps 1 2"), None);
        assert_eq!(
            decode_progress(&format!("{} someone\nstamps 1", JobId::random())),
            None
        );
        // A phase message is not a progress report, nor the other way round.
        assert_eq!(
            decode_progress(&format!("{} EXECUTING someone", JobId::random())),
            None
        );
    }

    #[test]
    fn a_malformed_message_is_ignored() {
        assert_eq!(decode("not-a-job EXECUTING someone"), None);
        assert_eq!(decode(&format!("{} EXECUTING", JobId::random())), None);
    }
}
