//! Connecting: the libpq-style configuration (URL or `key=value`), the password from the
//! string, `PGPASSWORD` or a password file, TLS with rustls, and the pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;

use crate::store::StoreError;

/// How to reach the database. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// A libpq connection URL (`postgresql://user:pw@host:port/db?sslmode=require`) or a
    /// `key=value` string (`host=... user=... dbname=...`).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Bound on establishing one connection (if the string sets none).
    pub connect_timeout: Duration,
    /// Bound on one store operation, so a database that stopped answering makes a login fail
    /// (`temporary-auth-failure`) instead of hanging it.
    pub operation_timeout: Duration,
    /// PEM file of the CA that signs the server certificate; `None` = the web PKI roots.
    pub ca_file: Option<PathBuf>,
}

impl PostgresOptions {
    /// Options for `url` with the defaults: 16 connections, 5 s to connect, 10 s per
    /// operation, web PKI roots.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

/// `url` with any password replaced: for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match tokio_postgres::Config::from_str_checked(url) {
        Some(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            format!(
                "host={} port={:?} user={} dbname={} password={}",
                hosts.join(","),
                c.get_ports(),
                c.get_user().unwrap_or("-"),
                c.get_dbname().unwrap_or("-"),
                if c.get_password().is_some() {
                    "[redacted]"
                } else {
                    "-"
                }
            )
        }
        None => "[unparsable connection string]".to_owned(),
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

trait FromStrChecked: Sized {
    fn from_str_checked(s: &str) -> Option<Self>;
}

impl FromStrChecked for tokio_postgres::Config {
    fn from_str_checked(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// One line of a libpq password file: `hostname:port:database:username:password`, `*`
/// matching anything, `\:` and `\\` escaped.
fn passfile_fields(line: &str) -> Option<[String; 5]> {
    let mut fields = Vec::with_capacity(5);
    let mut cur = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next()?),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields.try_into().ok()
}

/// The password for (host, port, database, user) from a libpq password file, as libpq reads
/// it: the first matching line wins, and a file that group or others can read is ignored.
pub(crate) fn passfile_password(
    path: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "password file is readable by group or others; ignored (as libpq does)");
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some([h, p, d, u, pw]) = passfile_fields(line) else {
            continue;
        };
        let m = |field: &str, value: &str| field == "*" || field == value;
        if m(&h, host) && m(&p, &port) && m(&d, dbname) && m(&u, user) {
            return Some(pw);
        }
    }
    None
}

/// The parsed configuration with a password filled in from `PGPASSWORD` or the password file
/// when the string has none, and the connect timeout defaulted.
pub(crate) fn config(options: &PostgresOptions) -> Result<tokio_postgres::Config, StoreError> {
    config_with_env(options, &|name| std::env::var_os(name))
}

/// [`config`] with the environment given (tests pass their own).
pub(crate) fn config_with_env(
    options: &PostgresOptions,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut c: tokio_postgres::Config = options.url.parse().map_err(|e| {
        StoreError::backend(format!(
            "postgres_url is not a valid connection string ({}): {e}",
            redact_url(&options.url)
        ))
    })?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(options.connect_timeout);
    }
    let var = |name: &str| env(name).and_then(|v| v.into_string().ok());
    if c.get_user().is_none()
        && let Some(u) = var("PGUSER").or_else(|| var("USER"))
    {
        c.user(u);
    }
    if c.get_password().is_none() {
        if let Some(pw) = var("PGPASSWORD") {
            c.password(pw);
        } else {
            let file = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                let host = match c.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    // libpq matches a socket directory against "localhost".
                    _ => "localhost".to_owned(),
                };
                let port = c.get_ports().first().copied().unwrap_or(5432);
                let user = c.get_user().unwrap_or("").to_owned();
                let db = c.get_dbname().unwrap_or(&user).to_owned();
                if let Some(pw) = passfile_password(&file, &host, port, &db, &user) {
                    c.password(pw);
                }
            }
        }
    }
    Ok(c)
}

/// The rustls connector for `sslmode=prefer|require`: the configured CA, or the web PKI.
pub(crate) fn tls(
    options: &PostgresOptions,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| {
                StoreError::backend(format!("postgres CA file {}: {e}", path.display()))
            })? {
                let cert = cert.map_err(|e| {
                    StoreError::backend(format!("postgres CA file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(StoreError::backend)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(StoreError::backend)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The pool: TLS only when the string asks for it (`sslmode=prefer` or `require`).
pub(crate) fn pool(
    options: &PostgresOptions,
    config: tokio_postgres::Config,
) -> Result<deadpool_postgres::Pool, StoreError> {
    let manager_config = deadpool_postgres::ManagerConfig {
        // Checks a connection before handing it out again, so a server restart costs one
        // failed operation per broken connection at most, and the pool heals by itself.
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    };
    let manager = match config.get_ssl_mode() {
        SslMode::Disable => {
            deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        _ => deadpool_postgres::Manager::from_config(config, tls(options)?, manager_config),
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .wait_timeout(Some(options.operation_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(StoreError::backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let o = PostgresOptions::new("postgresql://fast:s3cr3t@db.example:5433/xmpp");
        let d = format!("{o:?}");
        assert!(!d.contains("s3cr3t"), "{d}");
        assert!(d.contains("db.example") && d.contains("xmpp"), "{d}");
        let o = PostgresOptions::new("host=db user=fast password=s3cr3t dbname=x");
        assert!(!format!("{o:?}").contains("s3cr3t"));
        assert!(!redact_url("not a url = = '").contains("'"));
    }

    #[test]
    fn password_file_matching() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(
            &p,
            "# comment\nother:*:*:*:nope\nlocalhost:5433:xmpp:fast:pw\\:with\\\\colon\n*:*:*:*:fallback\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(
            passfile_password(&p, "localhost", 5433, "xmpp", "fast").as_deref(),
            Some("pw:with\\colon")
        );
        assert_eq!(
            passfile_password(&p, "db", 5432, "x", "y").as_deref(),
            Some("fallback")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(passfile_password(&p, "db", 5432, "x", "y"), None);
        }
    }
}
