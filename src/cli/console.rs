//! `sealstream users ...` (console accounts) and `sealstream console` (the review console
//! alone, against the same database and store as the ingest nodes).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use sealstream::config::ServeConfig;
use sealstream::console::{Console, auth};
use sealstream::metadata::{ConsoleUser, Role, now_us};
use zeroize::Zeroizing;

use super::agent::{actor, metadata};

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a console account. Its password comes from --password-file or a no-echo prompt.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "reviewer"])]
        role: String,
        /// Agents a reviewer may see; repeat for several; `*` matches any run of characters.
        #[arg(long = "agents")]
        agents: Vec<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        config: PathBuf,
    },
    /// List console accounts.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Disable an account: it cannot log in and its open logins end.
    Disable {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Enable a disabled account.
    Enable {
        name: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Set a new password.
    Passwd {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        config: PathBuf,
    },
    /// Replace a reviewer's agent grants.
    Grant {
        name: String,
        #[arg(long = "agents", required = true)]
        agents: Vec<String>,
        #[arg(long)]
        config: PathBuf,
    },
}

/// The smallest password accepted.
const MIN_PASSWORD: usize = 10;

fn read_password(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let pass = match file {
        Some(f) => {
            let raw = Zeroizing::new(
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            );
            let t = raw
                .strip_suffix("\r\n")
                .or_else(|| raw.strip_suffix('\n'))
                .unwrap_or(&raw);
            Zeroizing::new(t.to_owned())
        }
        None => {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                bail!(
                    "no password given: use --password-file FILE, or run on a terminal to be asked"
                );
            }
            let a = Zeroizing::new(rpassword::prompt_password("Password: ")?);
            let b = Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
            if a != b {
                bail!("the two entries differ");
            }
            a
        }
    };
    if pass.chars().count() < MIN_PASSWORD {
        bail!("the password is too short: use at least {MIN_PASSWORD} characters");
    }
    Ok(pass)
}

fn check_patterns(patterns: &[String]) -> anyhow::Result<()> {
    for p in patterns {
        if p.is_empty() || p.len() > 256 || p.contains('\n') {
            bail!("agent pattern {p:?}: 1 to 256 characters, one line");
        }
    }
    Ok(())
}

pub fn users(cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async move {
        match cmd {
            UsersCommand::Add {
                name,
                role,
                agents,
                password_file,
                config,
            } => {
                let role = Role::parse(&role).expect("clap checked the role");
                if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                    bail!("user name: 1 to 64 printable characters");
                }
                check_patterns(&agents)?;
                if role == Role::Reviewer && agents.is_empty() {
                    eprintln!("note: reviewer {name} has no --agents grant yet: they will see nothing until `users grant`");
                }
                let serve = ServeConfig::load(&config)?;
                let pass = read_password(password_file.as_deref())?;
                let hash = auth::hash_password(&pass).map_err(anyhow::Error::msg)?;
                let md = metadata(&serve).await?;
                let user = ConsoleUser {
                    name: name.clone(),
                    role,
                    password_hash: hash,
                    agents,
                    created_us: now_us(),
                    disabled_us: None,
                };
                if !md.put_console_user(user, true, &actor(), "user_add").await? {
                    bail!("a console user named {name:?} exists already (change it with `users passwd`, `users grant`)");
                }
                eprintln!("added {} {name}", role.as_str());
                Ok(ExitCode::SUCCESS)
            }
            UsersCommand::List { config } => {
                let serve = ServeConfig::load(&config)?;
                let md = metadata(&serve).await?;
                println!("{:<24} {:<9} {:<9} agents", "name", "role", "state");
                for u in md.console_users().await? {
                    let agents = match u.role {
                        Role::Admin => "(all)".to_owned(),
                        Role::Reviewer => u.agents.join(","),
                    };
                    let state = if u.disabled_us.is_some() { "disabled" } else { "active" };
                    println!("{:<24} {:<9} {:<9} {agents}", u.name, u.role.as_str(), state);
                }
                Ok(ExitCode::SUCCESS)
            }
            UsersCommand::Disable { name, config } => change(&config, &name, "user_disable", |u| {
                u.disabled_us = Some(now_us());
                Ok(())
            })
            .await,
            UsersCommand::Enable { name, config } => change(&config, &name, "user_enable", |u| {
                u.disabled_us = None;
                Ok(())
            })
            .await,
            UsersCommand::Passwd {
                name,
                password_file,
                config,
            } => {
                let pass = read_password(password_file.as_deref())?;
                change(&config, &name, "user_passwd", move |u| {
                    u.password_hash = auth::hash_password(&pass).map_err(anyhow::Error::msg)?;
                    Ok(())
                })
                .await
            }
            UsersCommand::Grant {
                name,
                agents,
                config,
            } => {
                check_patterns(&agents)?;
                change(&config, &name, "user_grant", move |u| {
                    u.agents = agents;
                    Ok(())
                })
                .await
            }
        }
    })
}

async fn change(
    config: &Path,
    name: &str,
    action: &str,
    f: impl FnOnce(&mut ConsoleUser) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let serve = ServeConfig::load(config)?;
    let md = metadata(&serve).await?;
    let Some(mut u) = md.console_user(name).await? else {
        bail!("no console user named {name:?} (see `sealstream users list`)");
    };
    f(&mut u)?;
    md.put_console_user(u, false, &actor(), action).await?;
    eprintln!("{name}: {}", action.trim_start_matches("user_"));
    Ok(ExitCode::SUCCESS)
}

/// `sealstream console --config FILE`: the review console alone.
pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = ServeConfig::load(config)?;
    let Some(console) = cfg.console.clone() else {
        bail!(
            "{}: no [console] section: add one (listen, tls_cert, tls_key) to run the review console",
            config.display()
        );
    };
    actix_rt::System::new().block_on(async move {
        let md = metadata(&cfg).await?;
        let store = sealstream::storage::open(&cfg.store_location(), &cfg.store)?.objects;
        let c = Console::start(&console, md, store).await?;
        eprintln!(
            "sealstream review console on {} (store {}, {})",
            c.url(),
            cfg.store_location(),
            if cfg.database_url.is_empty() {
                "SQLite"
            } else {
                "PostgreSQL"
            }
        );
        super::serve::wait_for_signal().await;
        c.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}
