//! The `synchost:plugin/jetstream` interface: source plugins fetch messages of
//! the NATS JetStream streams their tenant granted them, and turn them into
//! events. The host owns everything with state: the connection (one per
//! server, shared), the durable pull consumer, and the acknowledgements.
//!
//! The cursor of a JetStream event sync is a stream sequence. Messages are
//! acknowledged (`AckPolicy::All`, so one ack covers every earlier message)
//! only once the batch that holds them is committed: the event engine calls
//! [`Acknowledger::committed`] with the cursor it stored. A crash between a
//! commit and its ack, or batches read ahead and never committed, leave
//! messages delivered but unacknowledged; the server would redeliver them
//! only after `ack_wait`, after newer ones, which would break per-key order.
//! So each plugin instance's first fetch (and any fetch that does not resume
//! where the last one ended) checks the consumer against the committed
//! cursor, and if the consumer has anything in flight or stands past the
//! cursor, puts it back at the cursor by recreating it from there. Messages
//! at or before the cursor that still arrive are acknowledged and skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::RetentionPolicy;
use futures_util::StreamExt;

use super::grants::Grants;
use super::services::HostServices;
use crate::config::StreamConfig;
use crate::plugin::bindings::jetstream::{Host, Message};
use crate::plugin::ctx::PluginCtx;
use crate::plugin::types::Error as WitError;

/// The longest a fetch (with repositioning, if needed) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages a consumer may have delivered and not yet acknowledged: batches
/// are read ahead of the one being committed, so well above `max_batch`.
const MAX_ACK_PENDING: i64 = 1_000_000;

/// Links the `jetstream` interface, served by [`PluginCtx`]'s grants.
pub(in crate::plugin) fn add_to_linker(linker: &mut wasmtime::component::Linker<PluginCtx>) -> wasmtime::Result<()> {
    crate::plugin::bindings::jetstream::add_to_linker::<_, wasmtime::component::HasSelf<PluginCtx>>(linker, |ctx| ctx)
}

/// What one plugin instance may read, and its consumers' state.
pub(in crate::plugin) struct JetStreamGrants {
    streams: Grants<StreamConfig>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    services: Arc<HostServices>,
}

/// One granted stream, as one plugin instance reads it.
struct Session {
    config: Arc<StreamConfig>,
    consumer: PullConsumer,
    /// Set once the consumer was checked against the cursor.
    positioned: bool,
    /// The highest sequence handed to the plugin (or the cursor it resumed at).
    handed_out: u64,
    /// Messages handed out and not yet acknowledged, by sequence.
    pending: BTreeMap<u64, async_nats::jetstream::Message>,
    services: Arc<HostServices>,
}

impl JetStreamGrants {
    pub(in crate::plugin) fn new(
        tenant: &str,
        plugin: &str,
        streams: &[Arc<StreamConfig>],
        services: Arc<HostServices>,
    ) -> JetStreamGrants {
        JetStreamGrants {
            streams: Grants::new(tenant, plugin, ("stream", "streams"), streams, |s| &s.name),
            sessions: Arc::default(),
            services,
        }
    }

    fn grant(&self, name: &str) -> Result<Arc<StreamConfig>, WitError> {
        self.streams.get(name)
    }

    /// What the event engine calls after each commit.
    pub(in crate::plugin) fn acknowledger(&self) -> Acknowledger {
        Acknowledger {
            plugin: self.streams.plugin.clone(),
            sessions: self.sessions.clone(),
            services: self.services.clone(),
        }
    }
}

/// Acknowledges what a committed batch consumed. Cheap to clone; a source
/// that reads no stream has nothing to acknowledge.
#[derive(Clone)]
pub struct Acknowledger {
    plugin: String,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    services: Arc<HostServices>,
}

impl Acknowledger {
    /// The batch with cursor `cursor` is committed: acknowledges every message
    /// up to that stream sequence. A failed ack is logged, not fatal: the
    /// next reader puts the consumer back at the committed cursor anyway.
    pub fn committed(&self, cursor: &str) {
        let mut sessions = self.sessions.lock().expect("jetstream sessions poisoned");
        if sessions.is_empty() {
            return;
        }
        let Ok(sequence) = cursor.parse::<u64>() else {
            tracing::warn!(
                plugin = %self.plugin,
                "cursor `{cursor}` is not a stream sequence, so nothing was acknowledged; a JetStream source's cursor \
                 must be the sequence of the last message it consumed"
            );
            return;
        };
        for session in sessions.values_mut() {
            let later = session.pending.split_off(&(sequence + 1));
            let done = std::mem::replace(&mut session.pending, later);
            // AckPolicy::All: acknowledging the last covers those before it.
            if let Some((_, last)) = done.into_iter().next_back() {
                let stream = session.config.name.clone();
                let acked = self.services.io().block_on(async {
                    tokio::time::timeout(crate::plugin::deadline::bounded(FETCH_TIMEOUT), last.ack()).await
                });
                if !matches!(acked, Ok(Ok(()))) {
                    tracing::warn!(plugin = %self.plugin, stream, "acknowledging up to sequence {sequence} failed");
                }
            }
        }
    }
}

fn unavailable(config: &StreamConfig, what: &str, e: impl std::fmt::Display) -> WitError {
    WitError::Transient(format!("stream `{}` ({} on {}): {what}: {e}", config.name, config.stream, config.url))
}

/// The client for `config`'s server, one per server and token in the engine's services.
async fn client(services: &HostServices, config: &StreamConfig) -> Result<async_nats::Client, WitError> {
    let key = (config.url.clone(), config.token.as_ref().map(|t| t.expose().to_string()));
    if let Some(client) = services.nats.lock().expect("nats clients poisoned").get(&key) {
        return Ok(client.clone());
    }
    let mut options = async_nats::ConnectOptions::new().name("synchost");
    if let Some(token) = &key.1 {
        options = options.token(token.clone());
    }
    let client = options.connect(&config.url).await.map_err(|e| unavailable(config, "cannot connect", e))?;
    services.nats.lock().expect("nats clients poisoned").insert(key, client.clone());
    Ok(client)
}

impl Session {
    async fn open(services: Arc<HostServices>, config: Arc<StreamConfig>) -> Result<Session, WitError> {
        let client = client(&services, &config).await?;
        let context = async_nats::jetstream::new(client);
        let stream = context.get_stream(&config.stream).await.map_err(|e| {
            WitError::Config(format!(
                "stream `{}`: JetStream stream `{}` on {}: {e}",
                config.name, config.stream, config.url
            ))
        })?;
        let consumer = match stream.get_consumer::<pull::Config>(&config.durable).await {
            Ok(consumer) => consumer,
            Err(_) => create_consumer(&stream, &config, DeliverPolicy::All).await?,
        };
        Ok(Session { config, consumer, positioned: false, handed_out: 0, pending: BTreeMap::new(), services })
    }

    /// Puts the consumer at `after` unless it already stands there with
    /// nothing in flight (see the module doc).
    async fn position(&mut self, after: u64) -> Result<(), WitError> {
        let config = self.config.clone();
        let info = self.consumer.info().await.map_err(|e| unavailable(&config, "consumer info", e))?;
        let filter_matches = info.config.filter_subject == config.filter_subject.clone().unwrap_or_default();
        let in_step = info.num_ack_pending == 0 && info.delivered.stream_sequence <= after && filter_matches;
        if !in_step {
            tracing::info!(
                stream = %config.name,
                consumer = %config.durable,
                "putting the consumer back at the committed sequence {after} (it had delivered up to {}, {} unacknowledged)",
                info.delivered.stream_sequence,
                info.num_ack_pending
            );
            let context = async_nats::jetstream::new(client(&self.services, &config).await?);
            let mut stream =
                context.get_stream(&config.stream).await.map_err(|e| unavailable(&config, "get stream", e))?;
            let retention = stream.info().await.map_err(|e| unavailable(&config, "stream info", e))?.config.retention;
            let start = if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence { start_sequence: after + 1 }
            };
            // On an interest stream, messages no consumer is interested in are
            // dropped: a second consumer holds them while the durable one is
            // made again.
            let guard = match retention {
                RetentionPolicy::Interest => Some(
                    stream
                        .create_consumer(pull::Config { deliver_policy: start, ..Default::default() })
                        .await
                        .map_err(|e| unavailable(&config, "guard consumer", e))?,
                ),
                _ => None,
            };
            stream.delete_consumer(&config.durable).await.map_err(|e| unavailable(&config, "delete consumer", e))?;
            self.consumer = create_consumer(&stream, &config, start).await?;
            if let Some(mut guard) = guard {
                let name = guard.info().await.map_err(|e| unavailable(&config, "guard consumer", e))?.name.clone();
                let _ = stream.delete_consumer(&name).await;
            }
        }
        self.positioned = true;
        self.handed_out = after;
        self.pending.clear();
        Ok(())
    }

    async fn fetch(&mut self, after: Option<u64>, max: u32) -> Result<Vec<Message>, WitError> {
        let after = after.unwrap_or(0);
        if !self.positioned || after != self.handed_out {
            self.position(after).await?;
        }
        let config = self.config.clone();
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.max(1) as usize)
            .messages()
            .await
            .map_err(|e| unavailable(&config, "fetch", e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| unavailable(&config, "fetch", e))?;
            let (sequence, published_ms) = {
                let info = message.info().map_err(|e| unavailable(&config, "message metadata", e))?;
                (info.stream_sequence, info.published.timestamp_millis())
            };
            if sequence <= after {
                // Committed before a crash kept it from being acknowledged.
                let _ = message.ack().await;
                continue;
            }
            if sequence <= self.handed_out {
                // Delivered again while in flight (past `ack_wait`): the
                // plugin has it; keep the newer delivery to acknowledge.
                self.pending.insert(sequence, message);
                continue;
            }
            let headers = message
                .headers
                .iter()
                .flat_map(|headers| headers.iter())
                .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.to_string())))
                .collect();
            out.push(Message {
                sequence,
                subject: message.subject.to_string(),
                headers,
                payload: message.payload.to_vec(),
                published_ms,
            });
            self.handed_out = sequence;
            self.pending.insert(sequence, message);
        }
        Ok(out)
    }
}

async fn create_consumer(
    stream: &async_nats::jetstream::stream::Stream,
    config: &StreamConfig,
    start: DeliverPolicy,
) -> Result<PullConsumer, WitError> {
    stream
        .create_consumer(pull::Config {
            durable_name: Some(config.durable.clone()),
            deliver_policy: start,
            ack_policy: AckPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: MAX_ACK_PENDING,
            filter_subject: config.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            WitError::Config(format!("stream `{}`: cannot make consumer `{}`: {e}", config.name, config.durable))
        })
}

impl Host for PluginCtx {
    fn fetch(&mut self, stream: String, after: Option<u64>, max: u32) -> Result<Vec<Message>, WitError> {
        let config = self.jetstream.grant(&stream)?;
        let sessions = self.jetstream.sessions.clone();
        let mut sessions = sessions.lock().expect("jetstream sessions poisoned");
        let fetched = self.jetstream.services.io().block_on(async {
            tokio::time::timeout(crate::plugin::deadline::bounded(FETCH_TIMEOUT), async {
                if !sessions.contains_key(&stream) {
                    let session = Session::open(self.jetstream.services.clone(), config.clone()).await?;
                    sessions.insert(stream.clone(), session);
                }
                sessions.get_mut(&stream).expect("inserted above").fetch(after, max).await
            })
            .await
        });
        match fetched {
            Ok(result) => result,
            Err(_) => {
                // Its consumer may be anywhere: the next fetch starts afresh.
                sessions.remove(&stream);
                Err(unavailable(
                    &config,
                    "fetch",
                    format!("no answer within {}", humantime::format_duration(FETCH_TIMEOUT)),
                ))
            }
        }
    }
}
