//! A PostgreSQL database of the run's own: created on the server `--database-url` names,
//! handed to the pipeline server as its `database_url`, dropped when the run ends.

use anyhow::Context;
use tokio_postgres::NoTls;

pub struct TempDatabase {
    admin: String,
    pub name: String,
    /// What the server's `database_url` is set to (key=value form, no password shown).
    pub url: String,
}

async fn exec(admin: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(admin, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({})", describe(admin)))?;
    let task = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("{sql} on {}", describe(admin)))?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// `host:port/db` of a connection string (never its password).
fn describe(url: &str) -> String {
    use tokio_postgres::config::Host;
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = match c.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                Some(Host::Unix(p)) => p.display().to_string(),
                None => "localhost".into(),
            };
            format!(
                "{host}:{}/{}",
                c.get_ports().first().copied().unwrap_or(5432),
                c.get_dbname().unwrap_or("postgres")
            )
        }
        Err(_) => "an unparsable connection string".into(),
    }
}

impl TempDatabase {
    pub async fn create(admin: &str, label: &str) -> anyhow::Result<TempDatabase> {
        use tokio_postgres::config::Host;
        let cfg: tokio_postgres::Config = admin
            .parse()
            .with_context(|| format!("--database-url {admin:?} is not a PostgreSQL URL"))?;
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).context("random database name")?;
        let name = format!("sealstream_lt_{label}_{}", hex::encode(id));
        exec(admin, &format!("CREATE DATABASE {name}")).await?;
        let mut url = String::new();
        if let Some(h) = cfg.get_hosts().first() {
            match h {
                Host::Tcp(h) => url.push_str(&format!("host={h} ")),
                Host::Unix(p) => url.push_str(&format!("host={} ", p.display())),
            }
        }
        if let Some(p) = cfg.get_ports().first() {
            url.push_str(&format!("port={p} "));
        }
        if let Some(u) = cfg.get_user() {
            url.push_str(&format!("user={u} "));
        }
        if let Some(pw) = cfg.get_password() {
            url.push_str(&format!(
                "password='{}' ",
                String::from_utf8_lossy(pw)
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
            ));
        }
        url.push_str(&format!("dbname={name}"));
        Ok(TempDatabase {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        exec(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}
