//! The page's files, embedded in the binary at build time (no CDN, no other origin, nothing
//! read from disk at run time). A test checks that every file under `console/assets/` is here.

use actix_web::{HttpResponse, web};

macro_rules! asset {
    ($path:literal, $mime:expr) => {
        (
            $path,
            $mime,
            include_bytes!(concat!("../../console/assets/", $path)) as &[u8],
        )
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// (path under `/assets/`, content type, bytes).
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/player.js", JS),
    asset!("js/keylog.js", JS),
    asset!("js/session.js", JS),
    asset!("js/export.js", JS),
    asset!("js/chunk.js", JS),
    asset!("js/dek.js", JS),
    asset!("js/der.js", JS),
    asset!("js/hex.js", JS),
    asset!("js/keyfile.js", JS),
    asset!("js/payload.js", JS),
    asset!("js/reader.js", JS),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{file:.*}", web::get().to(asset));
}

fn serve(path: &str) -> HttpResponse {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, mime, bytes)) => HttpResponse::Ok()
            .content_type(*mime)
            .insert_header(("Cache-Control", "no-cache"))
            .body(*bytes),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn index() -> HttpResponse {
    serve("index.html")
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    serve(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_console_assets_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console/assets");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    on_disk.push(
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.0.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_page_has_no_inline_script_and_no_other_origin() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains("<script>"), "inline script");
        for (path, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names another origin"
            );
        }
    }
}
