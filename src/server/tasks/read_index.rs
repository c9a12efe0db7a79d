//! The read-index task: runs the ReadIndex rounds that linearizable reads wait for
//! (`state::reads` describes the batching).

use std::sync::Arc;

use crate::server::state::reads::ReadResult;
use crate::server::state::server::Server;
use crate::server::types::error::ServerError;
use crate::server::types::request::NodeInput;

/// How long a ReadIndex request waits for its answer before it is sent again (etcd: 500 ms).
const READ_INDEX_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs rounds for as long as the member lives.
pub(crate) async fn run(server: Arc<Server>) {
    let reads = &server.reads;
    loop {
        tokio::select! {
            biased;
            _ = reads.readers_arrived() => {}
            _ = server.lifecycle.stopped() => break,
        }
        let readers = reads.take_waiting();
        if readers.is_empty() {
            continue;
        }
        let result = round(&server).await;
        for reader in readers {
            let _ = reader.send(result.clone());
        }
    }
    for reader in reads.take_waiting() {
        let _ = reader.send(Err(ServerError::Stopped));
    }
}

async fn round(server: &Server) -> ReadResult {
    #[cfg(madsim)]
    crate::server::types::observe::delay_point(
        server.id,
        crate::server::types::observe::Point::ReadIndexRound,
    )
    .await;
    let timeout = server.request_timeout();
    let (context, mut answer) = server.reads.open_round();
    // The request is sent again every retry interval until answered: a request the core
    // dropped (it lost leadership, or its messages were lost) would otherwise hold every
    // read behind it until the timeout. Late answers to earlier copies carry the same
    // context and are ignored once one arrived.
    let deadline = tokio::time::Instant::now() + timeout;
    let index = loop {
        server.proposer.try_send(NodeInput::ReadIndex {
            context: context.clone(),
        })?;
        let now = tokio::time::Instant::now();
        let wait = READ_INDEX_RETRY.min(deadline.saturating_duration_since(now));
        match tokio::time::timeout(wait, &mut answer).await {
            Ok(Ok(result)) => break result?,
            Ok(Err(_)) => return Err(ServerError::Stopped),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => {
                server.reads.abandon_round(&context);
                return Err(ServerError::Timeout);
            }
        }
    };
    match tokio::time::timeout(timeout, server.applied_reached(index)).await {
        Ok(()) => Ok(()),
        Err(_) => Err(ServerError::TimeoutWaitAppliedIndex),
    }
}
