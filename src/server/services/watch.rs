//! The Watch service: one bidirectional stream carries many watchers.
//!
//! Each gRPC stream gets a watch stream from the MVCC watch hub and two halves:
//! - the request half reads create / cancel / progress requests and acts on the hub,
//!   answering "created" (or "canceled" with a reason) itself;
//! - the response half forwards what the hub produces — events, compaction cancels,
//!   progress notifications — adding etcd's header, previous values when asked, and
//!   splitting oversized responses into fragments for watchers that allow it.
//!
//! Both halves send into one bounded channel, so responses leave in the order they were
//! produced, and a client that stops reading eventually stops the hub from buffering for it
//! (the hub then catches the watcher up from the backend: nothing is lost or duplicated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, AuthInfo};
use crate::mvcc::{WatchFilters, WatchStream};
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{
    watch_create_request::FilterType, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::Event;
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::stream::{ChannelStream, RequestSource};

/// Responses buffered per gRPC stream before the senders wait for the client.
const RESPONSES_BUFFERED: usize = 128;

/// The watch id etcd uses in answers that concern no single watcher (progress of all).
const NO_WATCH_ID: i64 = -1;

pub(crate) struct WatchService {
    pub(crate) server: Arc<Server>,
}

/// The cancel reason of a watcher refused for lack of read access: the text of etcd's gRPC
/// permission error, as etcd's watch server sends it.
const PERMISSION_DENIED_REASON: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// What the response half needs to know about each watcher of the stream.
#[derive(Clone, Copy, Default)]
struct WatcherOptions {
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
}

type Watchers = Arc<Mutex<HashMap<i64, WatcherOptions>>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ChannelStream<WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Who the stream comes from; each watcher it creates needs read access to its keys.
        let (metadata, extensions, requests) = request.into_parts();
        let info = self
            .server
            .request_parts_auth(&metadata, &extensions)
            .await?;
        Ok(Response::new(open(self.server.clone(), info, requests)))
    }
}

/// Serves one watch stream for the user `info` names, its requests from `requests`.
pub(crate) fn open(
    server: Arc<Server>,
    info: Option<AuthInfo>,
    requests: impl RequestSource<WatchRequest>,
) -> ChannelStream<WatchResponse> {
    let (responses, stream) = mpsc::channel(RESPONSES_BUFFERED);
    let hub_stream = server.store.new_watch_stream();
    // A std mutex: the two halves only insert, remove or copy one entry at a time.
    let watchers: Watchers = Arc::default();
    let control = hub_stream.controller();
    tokio::spawn(forward_hub(
        server.clone(),
        hub_stream,
        watchers.clone(),
        responses.clone(),
    ));
    tokio::spawn(read_requests(
        server, info, requests, control, watchers, responses,
    ));
    ChannelStream(stream)
}

/// The request half.
async fn read_requests(
    server: Arc<Server>,
    info: Option<AuthInfo>,
    mut requests: impl RequestSource<WatchRequest>,
    control: crate::mvcc::WatchController,
    watchers: Watchers,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    loop {
        let request = tokio::select! {
            biased;
            request = requests.next() => request,
            _ = server.lifecycle.stopped() => {
                let _ = responses.send(Err(ServerError::Stopped.into())).await;
                break;
            }
            // The client went away (its response stream is gone).
            _ = responses.closed() => break,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(status) => {
                // etcd ends the stream with the receive error.
                let _ = responses
                    .send(Err(super::limits::receive_failed(status)))
                    .await;
                break;
            }
        };
        let reply = match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let created = match server.auth.check(
                    info.as_ref(),
                    &create.key,
                    &create.range_end,
                    Access::Read,
                ) {
                    Ok(()) => create_watcher(&server, &control, &watchers, create),
                    Err(_) => WatchResponse {
                        header: Some(server.header(server.store.current_revision())),
                        watch_id: NO_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason: PERMISSION_DENIED_REASON.into(),
                        ..Default::default()
                    },
                };
                let id = created.watch_id;
                let ok = !created.canceled;
                if responses.send(Ok(created)).await.is_err() {
                    break;
                }
                if ok {
                    // Events may flow only after the "created" response.
                    control.release(id);
                }
                None
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                if control.cancel(cancel.watch_id) {
                    watchers
                        .lock()
                        .expect("watchers lock poisoned")
                        .remove(&cancel.watch_id);
                    Some(WatchResponse {
                        header: Some(server.header(server.store.current_revision())),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                } else {
                    None
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                control.request_progress();
                None
            }
            None => None,
        };
        if let Some(reply) = reply {
            if responses.send(Ok(reply)).await.is_err() {
                break;
            }
        }
    }
    // The client closed its side: the watchers of this stream go away with it.
    control.close();
}

fn create_watcher(
    server: &Server,
    control: &crate::mvcc::WatchController,
    watchers: &Watchers,
    create: WatchCreateRequest,
) -> WatchResponse {
    let current = server.store.current_revision();
    let start_revision = match create.start_revision {
        0 => current + 1,
        revision => revision,
    };
    let filters = WatchFilters {
        no_put: create.filters.contains(&(FilterType::Noput as i32)),
        no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
    };
    let requested_id = (create.watch_id != 0).then_some(create.watch_id);
    let options = WatcherOptions {
        prev_kv: create.prev_kv,
        fragment: create.fragment,
        progress_notify: create.progress_notify,
    };
    // Register the options before the hub can produce anything for the watcher.
    let result = {
        let mut watchers = watchers.lock().expect("watchers lock poisoned");
        let result = control.watch(
            requested_id,
            create.key.clone(),
            create.range_end.clone(),
            start_revision,
            filters,
        );
        if let Ok(id) = result {
            watchers.insert(id, options);
        }
        result
    };
    match result {
        Ok(id) => WatchResponse {
            header: Some(server.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        },
        Err(error) => WatchResponse {
            header: Some(server.header(current)),
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: error.to_string(),
            ..Default::default()
        },
    }
}

/// The response half: hub output → gRPC responses.
async fn forward_hub(
    server: Arc<Server>,
    mut hub: WatchStream,
    watchers: Watchers,
    responses: mpsc::Sender<Result<WatchResponse, Status>>,
) {
    let progress_every =
        Duration::from_millis(server.config.watch_progress_notify_interval_ms.max(100));
    let mut progress = tokio::time::interval(progress_every);
    progress.tick().await;
    loop {
        let update = tokio::select! {
            biased;
            update = hub.recv() => match update {
                Some(update) => update,
                None => break,
            },
            _ = progress.tick() => {
                let wanted: Vec<i64> = watchers
                    .lock()
                    .expect("watchers lock poisoned")
                    .iter()
                    .filter(|(_, options)| options.progress_notify)
                    .map(|(id, _)| *id)
                    .collect();
                hub.controller().notify_progress(&wanted);
                continue;
            }
        };
        let options = if update.watch_id == NO_WATCH_ID {
            WatcherOptions::default()
        } else {
            let watchers = watchers.lock().expect("watchers lock poisoned");
            match watchers.get(&update.watch_id) {
                Some(options) => *options,
                // Canceled meanwhile: nothing more goes out for it.
                None => continue,
            }
        };
        let canceled = update.compact_revision != 0;
        let mut events = update.events;
        if options.prev_kv {
            server.store.fill_prev_kvs(&mut events);
        } else {
            for event in &mut events {
                event.prev_kv = None;
            }
        }
        let response = WatchResponse {
            header: Some(server.header(update.revision)),
            watch_id: update.watch_id,
            created: false,
            canceled,
            compact_revision: update.compact_revision,
            cancel_reason: String::new(),
            fragment: false,
            events,
        };
        if canceled {
            watchers
                .lock()
                .expect("watchers lock poisoned")
                .remove(&update.watch_id);
        }
        let limit = server.config.max_request_bytes as usize;
        for part in fragments(response, options.fragment, limit) {
            if responses.send(Ok(part)).await.is_err() {
                return;
            }
        }
    }
}

/// Splits a response whose events exceed `limit_bytes` into fragments (every one but the
/// last has `fragment` set), when the watcher asked for fragmentation. One event is never
/// split; a single event larger than the limit travels alone.
fn fragments(response: WatchResponse, allowed: bool, limit_bytes: usize) -> Vec<WatchResponse> {
    use prost::Message as _;
    if !allowed || response.encoded_len() <= limit_bytes || response.events.len() <= 1 {
        return vec![response];
    }
    let mut parts = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut current_bytes = 0;
    let template = WatchResponse {
        events: Vec::new(),
        ..response.clone()
    };
    for event in response.events {
        let size = event.encoded_len() + 4;
        if !current.is_empty() && current_bytes + size > limit_bytes {
            parts.push(WatchResponse {
                events: std::mem::take(&mut current),
                fragment: true,
                ..template.clone()
            });
            current_bytes = 0;
        }
        current_bytes += size;
        current.push(event);
    }
    parts.push(WatchResponse {
        events: current,
        fragment: false,
        ..template
    });
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;
    use bytes::Bytes;

    fn event(size: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![b'v'; size]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_keep_every_event_in_order() {
        let response = WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| event(100 + i)).collect(),
            ..Default::default()
        };
        let parts = fragments(response.clone(), true, 350);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|part| part.fragment));
        assert!(!parts.last().unwrap().fragment);
        let rejoined: Vec<Event> = parts.into_iter().flat_map(|part| part.events).collect();
        assert_eq!(rejoined, response.events);
        assert_eq!(fragments(response.clone(), false, 350).len(), 1);
        assert_eq!(fragments(response, true, 1 << 20).len(), 1);
    }
}
