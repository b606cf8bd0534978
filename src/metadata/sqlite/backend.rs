//! The SQLite backend's [`Backend`] traits, each method the `Lite` one of the same name. SQLite
//! is one node: it has no leases, so `take_lease` is 0 and fences nothing.

use std::collections::HashMap;

use crate::metadata::review::{
    AuditQuery, AuditRow, ChunkLocation, ConsoleUser, Login, SessionQuery, SessionSummary,
};
use crate::metadata::store::{
    AccessStore, AuditStore, Backend, ConsoleStore, Fut, IndexStore, KeyStore, ReviewStore,
};
use crate::metadata::{
    AccessChange, AccessOutcome, AccessRows, Admitted, CertSeen, KekRow, LeaseRow, RecordedAgent,
    SegmentCommit, StreamRow, Table,
};
use crate::protocol::{AgentId, DekRecord, SessionId, StreamId};

use super::Lite;

impl IndexStore for Lite {
    fn stream<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Fut<'a, Option<StreamRow>> {
        Box::pin(Lite::stream(self, agent, session, stream))
    }

    fn chunk_digest<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Fut<'a, Option<[u8; 32]>> {
        Box::pin(Lite::chunk_digest(self, agent, session, stream, seq))
    }

    fn commit_segment(&self, commit: SegmentCommit) -> Fut<'_, Vec<AgentId>> {
        Box::pin(async move {
            Lite::commit_segment(self, commit)
                .await
                .map(|()| Vec::new())
        })
    }

    fn take_lease<'a>(&'a self, _agent: &'a AgentId, _node: &'a str) -> Fut<'a, i64> {
        // One node: no leases, and epoch 0 fences nothing.
        Box::pin(async { Ok(0) })
    }

    fn leases(&self) -> Fut<'_, Vec<LeaseRow>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

crate::metadata::forward::forward_shared_traits!(Lite);

impl Backend for Lite {
    fn describe(&self) -> String {
        "SQLite (embedded, in the state directory)".into()
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn migrate(&self) -> Fut<'_, ()> {
        Box::pin(Lite::migrate(self))
    }

    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(Lite::ping(self))
    }

    fn count(&self, table: Table) -> Fut<'_, i64> {
        Box::pin(Lite::count(self, table.name()))
    }
}
