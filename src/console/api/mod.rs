//! The console's JSON and byte API: the route table. Every handler takes a `Caller` (logged
//! in, CSRF checked for state changes), answers 404 for anything outside the caller's agents
//! (and audits the attempt), and writes its audit row before it answers (`access`).

use actix_web::web;

mod access;
mod audit_log;
mod chunks;
mod export;
mod keys;
mod login;
mod overview;
mod sessions;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .wrap(actix_web::middleware::DefaultHeaders::new().add(("Cache-Control", "no-store")))
            .route("/login", web::post().to(login::login))
            .route("/logout", web::post().to(login::logout))
            .route("/me", web::get().to(login::me))
            .route("/agents", web::get().to(sessions::agents))
            .route("/sessions", web::get().to(sessions::sessions))
            .route("/overview", web::get().to(overview::overview))
            .route(
                "/agents/{agent}/sessions/{session}",
                web::get().to(sessions::session),
            )
            .route(
                "/agents/{agent}/sessions/{session}/index",
                web::get().to(chunks::index),
            )
            .route(
                "/agents/{agent}/sessions/{session}/streams/{stream}/chunks",
                web::get().to(chunks::chunks),
            )
            .route("/deks/{dek}", web::get().to(keys::dek))
            .route("/keks", web::get().to(keys::keks))
            .route("/agent-ca", web::get().to(keys::agent_ca))
            .route("/keks/{kek}/{which}", web::get().to(keys::kek_file))
            .route("/exports", web::post().to(export::export_request))
            .route("/audit", web::get().to(audit_log::audit)),
    );
}
