//! The integration tests: one binary (`cargo test --test it`), one module per subject, sharing
//! `common`. Each runs the real server in-process or the real binary, against what the machine
//! has; `.ci/run` installs all of it. Run one subject alone with its module as the filter, e.g.
//! `cargo test --test it capture::`.
//!
//! | module | needs besides openssl and the built binary |
//! |---|---|
//! | `admission`, `cli`, `first_hour`, `fuzz_corpus`, `keys_openssl`, `proof`, `vectors` | nothing |
//! | `audit`, `console_api`, `console_migration`, `faults`, `ingest`, `metadata`, `offline_ca`, `postgres`, `revocation` | PostgreSQL on 127.0.0.1:5432 |
//! | `balance`, `multinode`, `object_stores` | PostgreSQL and moto (`pip install 'moto[server]'`) |
//! | `operator` (what a node logs and exports by default, readers on plain-HTTP S3) | PostgreSQL and moto |
//! | `capture` | Xvfb, xdotool, xterm, xwd, xwininfo, ImageMagick, xauth |
//! | `console_browser` | Chromium and chromedriver; Xvfb and xdotool for its captured session |
//! | `console_js` | Node.js 20 and ssh-keygen |
//! | `prometheus` | promtool (Debian's `prometheus`) |
//! | `reference_decryptor` | python3 with `cryptography` |
//! | `soak` | root and the failpoints build (`ops/soak.sh`); not in the default build |

mod common;

mod admission;
mod audit;
mod balance;
mod capture;
mod cli;
mod console_api;
mod console_browser;
mod console_js;
mod console_migration;
mod faults;
mod first_hour;
mod fuzz_corpus;
mod ingest;
mod keys_openssl;
mod metadata;
mod multinode;
mod object_stores;
mod offline_ca;
mod operator;
mod packaging;
mod postgres;
mod prometheus;
mod proof;
mod reference_decryptor;
mod revocation;
#[cfg(feature = "failpoints")]
mod soak;
mod vectors;
