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
    asset!("js/proof.js", JS),
    asset!("js/keyring.js", JS),
    asset!("js/tiles.js", JS),
    asset!("js/montage.js", JS),
    asset!("js/snapshots.js", JS),
    asset!("js/report.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/screen.js", JS),
    asset!("js/activity.js", JS),
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

    /// An HTML start tag: its lowercased name, its attributes (lowercased name, value as
    /// written, `None` without `=`), and the byte offset just after its `>`.
    struct Tag {
        name: String,
        attrs: Vec<(String, Option<String>)>,
        end: usize,
    }

    /// The start tag at `at` (`html[at] == '<'`, a letter next), or None if it never closes.
    fn start_tag(html: &str, at: usize) -> Option<Tag> {
        let b = html.as_bytes();
        let stop = |c: u8| c.is_ascii_whitespace() || c == b'>' || c == b'/' || c == b'=';
        let mut i = at + 1;
        let from = i;
        while i < b.len() && !stop(b[i]) {
            i += 1;
        }
        let name = html[from..i].to_ascii_lowercase();
        let mut attrs = Vec::new();
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            match b.get(i)? {
                b'>' => {
                    return Some(Tag {
                        name,
                        attrs,
                        end: i + 1,
                    });
                }
                _ => {
                    let from = i;
                    while i < b.len() && !stop(b[i]) {
                        i += 1;
                    }
                    let attr = html[from..i].to_ascii_lowercase();
                    while i < b.len() && b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    let mut value = None;
                    if b.get(i) == Some(&b'=') {
                        i += 1;
                        while i < b.len() && b[i].is_ascii_whitespace() {
                            i += 1;
                        }
                        let v = match b.get(i)? {
                            q @ (b'"' | b'\'') => {
                                let close = html[i + 1..].find(*q as char)? + i + 1;
                                let v = &html[i + 1..close];
                                i = close + 1;
                                v
                            }
                            _ => {
                                let from = i;
                                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                                    i += 1;
                                }
                                &html[from..i]
                            }
                        };
                        value = Some(v.to_owned());
                    }
                    attrs.push((attr, value));
                }
            }
        }
    }

    /// Every way `html` runs script of its own, described: a `<script>` without a non-empty
    /// `src` or with anything between its start tag and `</script>` (a classic, module or any
    /// other type), an `on…` event-handler attribute, a `javascript:` URL, or a tag that never
    /// closes. Empty when every script is a file the page loads by `src`.
    fn inline_scripts(html: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(off) = html[at..].find('<') {
            let i = at + off;
            at = i + 1;
            if !html[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                continue;
            }
            let Some(tag) = start_tag(html, i) else {
                found.push(format!("a tag that never closes at byte {i}"));
                break;
            };
            let written = &html[i..tag.end];
            for (name, value) in &tag.attrs {
                if name.starts_with("on") {
                    found.push(format!("event handler {name} in {written}"));
                }
                let v = value
                    .as_deref()
                    .unwrap_or("")
                    .trim_start()
                    .to_ascii_lowercase();
                if v.starts_with("javascript:") {
                    found.push(format!("javascript: URL in {written}"));
                }
            }
            if tag.name == "script" {
                let has_src = tag
                    .attrs
                    .iter()
                    .any(|(n, v)| n == "src" && v.as_deref().is_some_and(|v| !v.trim().is_empty()));
                if !has_src {
                    found.push(format!("script without src: {written}"));
                }
                let rest = html[tag.end..].to_ascii_lowercase();
                let closed = rest
                    .strip_prefix("</script")
                    .is_some_and(|r| r.trim_start().starts_with('>'));
                if !closed {
                    let upto = rest.find("</script").unwrap_or(rest.len());
                    let content: String = html[tag.end..tag.end + upto].chars().take(60).collect();
                    found.push(format!("script with content: {written}{content}"));
                }
                at = tag.end;
            }
        }
        found
    }

    #[test]
    fn the_inline_script_check_finds_every_inline_form() {
        let fine = "<head><script type=\"module\" src=\"/assets/js/app.js\"></script>\n\
                    <SCRIPT src='/a.js' defer></SCRIPT ><link rel=stylesheet href=/assets/app.css></head>";
        assert_eq!(inline_scripts(fine), Vec::<String>::new());
        for (html, what) in [
            (
                "<script type=\"module\">import('/x.js')</script>",
                "script without src: <script type=\"module\">",
            ),
            (
                "<script type=\"module\">import('/x.js')</script>",
                "script with content: <script type=\"module\">import('/x.js')",
            ),
            ("<script>alert(1)</script>", "script without src: <script>"),
            (
                "<Script\n  type=text/javascript>alert(1)</script>",
                "script without src",
            ),
            (
                "<script type=\"importmap\">{}</script>",
                "script with content",
            ),
            (
                "<script src=\"/a.js\">alert(1)</script>",
                "script with content: <script src=\"/a.js\">alert(1)",
            ),
            ("<script src=\"\"></script>", "script without src"),
            ("<script src></script>", "script without src"),
            ("<script src=\"/a.js\">", "script with content"),
            (
                "<body onload=\"go()\">",
                "event handler onload in <body onload=\"go()\">",
            ),
            (
                "<a href=\" JavaScript:go()\">x</a>",
                "javascript: URL in <a href=",
            ),
            ("<script src=\"/a.js\"", "a tag that never closes at byte 0"),
        ] {
            let found = inline_scripts(html);
            assert!(
                found.iter().any(|f| f.starts_with(what)),
                "{html}: {found:?}"
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_and_no_other_origin() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert_eq!(inline_scripts(html), Vec::<String>::new());
        // The page does load its script: the check above looked at a real <script> tag.
        assert_eq!(
            html.matches("<script type=\"module\" src=\"/assets/js/app.js\"></script>")
                .count(),
            1
        );
        for (path, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names another origin"
            );
        }
    }
}
