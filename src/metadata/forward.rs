//! The traits both backends implement alike: every method of `KeyStore`, `AccessStore`,
//! `ConsoleStore`, `AuditStore` and `ReviewStore` is the backend's own method of the same name.
//! (`IndexStore` and `Backend` differ: SQLite has no leases.)

/// Implement the five shared traits for `$backend` by its inherent methods.
macro_rules! forward_shared_traits {
    ($backend:ident) => {
        impl KeyStore for $backend {
            fn keks(&self) -> Fut<'_, Vec<KekRow>> {
                Box::pin($backend::keks(self))
            }

            fn set_kek_fingerprint<'a>(&'a self, id: i64, fingerprint: &'a str) -> Fut<'a, ()> {
                Box::pin($backend::set_kek_fingerprint(self, id, fingerprint))
            }

            fn mark_kek_retired(&self, id: i64) -> Fut<'_, ()> {
                Box::pin($backend::mark_kek_retired(self, id))
            }

            fn insert_kek<'a>(
                &'a self,
                active: bool,
                priv_encrypted: bool,
                pub_datafile: &'a str,
                priv_datafile: &'a str,
            ) -> Fut<'a, ()> {
                Box::pin($backend::insert_kek(
                    self,
                    active,
                    priv_encrypted,
                    pub_datafile,
                    priv_datafile,
                ))
            }

            fn insert_deks(&self, records: Vec<(DekRecord, String)>) -> Fut<'_, ()> {
                Box::pin($backend::insert_deks(self, records))
            }

            fn deks_in_last_minute(&self) -> Fut<'_, Vec<(String, i64)>> {
                Box::pin($backend::deks_in_last_minute(self))
            }

            fn dek_owners(&self, dek_ids: Vec<[u8; 16]>) -> Fut<'_, HashMap<[u8; 16], String>> {
                Box::pin($backend::dek_owners(self, dek_ids))
            }

            fn dek_record(&self, dek_id: [u8; 16]) -> Fut<'_, Option<(String, Vec<u8>)>> {
                Box::pin($backend::dek_record(self, dek_id))
            }

            fn kek_agents(&self, kek: String) -> Fut<'_, Vec<String>> {
                Box::pin($backend::kek_agents(self, kek))
            }
        }

        impl AccessStore for $backend {
            fn access_rows(&self) -> Fut<'_, AccessRows> {
                Box::pin($backend::access_rows(self))
            }

            fn change_access(&self, change: AccessChange, actor: String) -> Fut<'_, AccessOutcome> {
                Box::pin($backend::change_access(self, change, actor))
            }

            fn record_admitted(&self, cert: Admitted) -> Fut<'_, bool> {
                Box::pin($backend::record_admitted(self, cert))
            }

            fn note_serial(&self, fingerprint: String, serial: String) -> Fut<'_, ()> {
                Box::pin($backend::note_serial(self, fingerprint, serial))
            }

            fn certificates_seen(&self) -> Fut<'_, Vec<CertSeen>> {
                Box::pin($backend::certificates_seen(self))
            }
        }

        impl ConsoleStore for $backend {
            fn console_user(&self, name: String) -> Fut<'_, Option<ConsoleUser>> {
                Box::pin($backend::console_user(self, name))
            }

            fn console_users(&self) -> Fut<'_, Vec<ConsoleUser>> {
                Box::pin($backend::console_users(self))
            }

            fn put_console_user(
                &self,
                user: ConsoleUser,
                new_only: bool,
                actor: String,
                action: String,
            ) -> Fut<'_, bool> {
                Box::pin($backend::put_console_user(
                    self, user, new_only, actor, action,
                ))
            }

            fn insert_login(&self, login: Login) -> Fut<'_, ()> {
                Box::pin($backend::insert_login(self, login))
            }

            fn touch_login(
                &self,
                token_sha256: [u8; 32],
                now_us: i64,
                idle_us: i64,
            ) -> Fut<'_, Option<Login>> {
                Box::pin($backend::touch_login(self, token_sha256, now_us, idle_us))
            }

            fn delete_login(&self, token_sha256: [u8; 32]) -> Fut<'_, ()> {
                Box::pin($backend::delete_login(self, token_sha256))
            }
        }

        impl AuditStore for $backend {
            fn audit<'a>(
                &'a self,
                actor: &'a str,
                action: &'a str,
                detail: &'a str,
            ) -> Fut<'a, ()> {
                Box::pin($backend::audit(self, actor, action, detail))
            }

            fn audit_from(&self, row: [String; 4]) -> Fut<'_, ()> {
                Box::pin($backend::audit_from(self, row))
            }

            fn audit_chain_rows(&self) -> Fut<'_, Vec<crate::audit::ChainRow>> {
                Box::pin($backend::audit_chain_rows(self))
            }

            fn audit_head(&self) -> Fut<'_, Option<(i64, Vec<u8>)>> {
                Box::pin($backend::audit_head(self))
            }

            fn audit_page(&self, q: AuditQuery) -> Fut<'_, Vec<AuditRow>> {
                Box::pin($backend::audit_page(self, q))
            }
        }

        impl ReviewStore for $backend {
            fn sessions(&self, q: SessionQuery) -> Fut<'_, Vec<SessionSummary>> {
                Box::pin($backend::sessions(self, q))
            }

            fn session(
                &self,
                q: SessionQuery,
                session: [u8; 16],
            ) -> Fut<'_, Option<SessionSummary>> {
                Box::pin($backend::session(self, q, session))
            }

            fn recorded_agents(&self, allowed: Option<Vec<String>>) -> Fut<'_, Vec<RecordedAgent>> {
                Box::pin($backend::recorded_agents(self, allowed))
            }

            fn chunk_locations(
                &self,
                agent: String,
                session: [u8; 16],
                stream: Option<u32>,
                from_seq: u64,
                limit: u32,
            ) -> Fut<'_, Vec<ChunkLocation>> {
                Box::pin($backend::chunk_locations(
                    self, agent, session, stream, from_seq, limit,
                ))
            }

            fn frame_picks(
                &self,
                agent: String,
                session: [u8; 16],
                stream: u32,
                since_us: Option<i64>,
                until_us: Option<i64>,
                slots: u32,
            ) -> Fut<'_, Vec<ChunkLocation>> {
                Box::pin($backend::frame_picks(
                    self, agent, session, stream, since_us, until_us, slots,
                ))
            }

            fn session_agents(&self, session: [u8; 16]) -> Fut<'_, Vec<String>> {
                Box::pin($backend::session_agents(self, session))
            }
        }
    };
}

pub(super) use forward_shared_traits;
