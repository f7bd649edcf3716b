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

fn decode(text: &str) -> Option<PhaseChange> {
    let (id, phase) = text.split_once(' ')?;
    Some(PhaseChange {
        id: JobId::parse(id).ok()?,
        phase: phase.parse::<ExecutionPhase>().ok()?,
    })
}

impl PhaseEvents for RedisPhaseEvents {
    fn publish(&self, change: PhaseChange) {
        let publisher = self.publisher.clone();
        let channel = self.channel.clone();
        let text = format!("{} {}", change.id, change.phase);
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
