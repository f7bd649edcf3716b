//! Phase events over Redis pub/sub, so a frontend's `WAIT` wakes when a worker on another host
//! moves the job. Each process forwards the channel into a local broadcast that
//! [`uws::events::PhaseEvents::subscribe`] hands out.

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::broadcast;
use uws::events::{PhaseChange, PhaseEvents};
use uws::{ExecutionPhase, JobId};

/// Publishes to and listens on one channel. Cloning shares the connections.
#[derive(Clone)]
pub struct RedisPhaseEvents {
    publisher: Client,
    channel: String,
    local: broadcast::Sender<PhaseChange>,
}

impl RedisPhaseEvents {
    /// Subscribes to `channel` (resubscribing by itself after a reconnect) and forwards what
    /// arrives to local subscribers.
    pub async fn start(
        publisher: Client,
        url: &str,
        channel: &str,
    ) -> Result<RedisPhaseEvents, fred::error::Error> {
        let subscriber: SubscriberClient = Builder::from_config(Config::from_url(url)?)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        subscriber.subscribe(channel).await?;
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
            channel: channel.to_owned(),
            local,
        })
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
        let channel = self.channel.clone();
        let text = encode(&change);
        // An event is a hint; a lost one costs a waiter a fallback re-read, not correctness.
        tokio::spawn(async move {
            let sent: Result<i64, _> = publisher.publish(channel, text).await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "phase event not published");
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
    fn a_malformed_message_is_ignored() {
        assert_eq!(decode("not-a-job EXECUTING someone"), None);
        assert_eq!(decode(&format!("{} EXECUTING", JobId::random())), None);
    }
}
