//! The PostgreSQL backend's [`Backend`] traits, each method the `Pg` one of the same name.

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

use super::Pg;

impl IndexStore for Pg {
    fn stream<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
    ) -> Fut<'a, Option<StreamRow>> {
        Box::pin(Pg::stream(self, agent, session, stream))
    }

    fn chunk_digest<'a>(
        &'a self,
        agent: &'a AgentId,
        session: SessionId,
        stream: StreamId,
        seq: u64,
    ) -> Fut<'a, Option<[u8; 32]>> {
        Box::pin(Pg::chunk_digest(self, agent, session, stream, seq))
    }

    fn commit_segment(&self, commit: SegmentCommit) -> Fut<'_, Vec<AgentId>> {
        Box::pin(Pg::commit_segment(self, commit))
    }

    fn take_lease<'a>(&'a self, agent: &'a AgentId, node: &'a str) -> Fut<'a, i64> {
        Box::pin(Pg::take_lease(self, agent, node))
    }

    fn leases(&self) -> Fut<'_, Vec<LeaseRow>> {
        Box::pin(Pg::leases(self))
    }
}

crate::metadata::forward::forward_shared_traits!(Pg);

impl Backend for Pg {
    fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.target())
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn migrate(&self) -> Fut<'_, ()> {
        Box::pin(Pg::migrate(self))
    }

    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(Pg::ping(self))
    }

    fn count(&self, table: Table) -> Fut<'_, i64> {
        Box::pin(Pg::count(self, table.name()))
    }
}
