//! The ingest service end to end: real QUIC on loopback, real PostgreSQL and the SQLite
//! default, openssl-made KEKs, enrolled agents, export with the passphrase.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::agents::{check, http_get, run_agent, spec};
use crate::common::server::{Backend, Env, RawStream, insert_kek};
use sealstream::agent::{self, AgentReport, Source, synthetic};
use sealstream::crypto::Dek;
use sealstream::export;
use sealstream::keys;
use sealstream::metadata::Table;
use sealstream::protocol::uplink::{MSG_CHUNK, MSG_DEK, Reject, Response};
use sealstream::protocol::{AgentId, Kind, Segment, SessionId, StreamId};
use sealstream::recorder::Recorder;
use sealstream::storage::{self, paths};

mod keks;
mod ops;
mod restarts;
mod round_trip;
