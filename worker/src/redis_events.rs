//! Phase events over Redis pub/sub, so a frontend's `WAIT` wakes when a worker on another host
//! moves the job. Each process forwards the channel it hears into a local broadcast that
//! [`uws::events::PhaseEvents::subscribe`] hands out.
//!
//! Every change goes to the events channel, and a final one to the final-events channel too: a
//! worker hears only the latter (it cancels a job on a final phase and needs nothing else), so
//! a job's QUEUED and EXECUTING are delivered to the frontends alone, not to every worker (each
//! delivery costs Redis and the hearing process CPU, and there are many more workers).

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::broadcast;
use uws::events::{PhaseChange, PhaseEvents};
use uws::{ExecutionPhase, JobId};

use crate::redis::Streams;

/// Which phase changes a process hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hearing {
    /// Every change (a frontend).
    Every,
    /// Final phases only (a worker, which cancels a job on one).
    FinalOnly,
}

/// Publishes to both channels and listens on one. Cloning shares the connections.
#[derive(Clone)]
pub struct RedisPhaseEvents {
    publisher: Client,
    channel: String,
    final_channel: String,
    local: broadcast::Sender<PhaseChange>,
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
        let heard = match hearing {
            Hearing::Every => channel.clone(),
            Hearing::FinalOnly => final_channel.clone(),
        };
        let subscriber: SubscriberClient = Builder::from_config(Config::from_url(url)?)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        subscriber.subscribe(heard).await?;
        let (local, _) = broadcast::channel(4096);
        let forward = local.clone();
        let mut messages = subscriber.message_rx();
        tokio::spawn(async move {
            // Keeps the subscriber client alive as long as the forwarding task runs.
            let _subscriber = subscriber;
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if let Some(change) = message.value.as_string().as_deref().and_then(decode)
                        {
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
            local,
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

impl PhaseEvents for RedisPhaseEvents {
    fn publish(&self, change: PhaseChange) {
        let publisher = self.publisher.clone();
        let channels: Vec<String> = channels(change.phase, &self.channel, &self.final_channel)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let text = encode(&change);
        // An event is a hint; a lost one costs a waiter a fallback re-read, not correctness.
        tokio::spawn(async move {
            for channel in channels {
                let sent: Result<i64, _> = publisher.publish(channel, text.as_str()).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "phase event not published");
                }
            }
        });
    }

    fn subscribe(&self) -> broadcast::Receiver<PhaseChange> {
        self.local.subscribe()
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
    fn a_malformed_message_is_ignored() {
        assert_eq!(decode("not-a-job EXECUTING someone"), None);
        assert_eq!(decode(&format!("{} EXECUTING", JobId::random())), None);
    }
}
