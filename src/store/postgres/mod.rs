//! A [`TokenStore`] in PostgreSQL, for a cluster of hosts that share one database (feature
//! `postgres`).
//!
//! # Schema
//! `fast_clients (account, client, version, record, expires_at)`: the key is the account and
//! the SHA-256 of the user-agent id (never the raw id), bounded by `CHECK`s; `record` is the
//! same binary encoding sled stores (the private `codec` module: one format for every store,
//! checked on decode), and `expires_at` ([`ClientRecord::expires_at`]) has a partial index, so
//! a sweep costs what expired. `fast_cutoffs (account, before)`: revocation cutoffs, the global
//! one under the empty account. The store owns the schema (the private `schema` module's migrations, applied at open).
//!
//! # One statement per operation
//! Every [`TokenStore`] operation is one statement, so it is atomic in the database and two
//! hosts never see each other's half-done work; nothing is cached in the process. Compare-
//! and-set is `UPDATE … WHERE account = $1 AND client = $2 AND version = $3` (an insert is
//! `INSERT … ON CONFLICT DO NOTHING`, a delete `DELETE … AND version = $3`), and the FAST
//! login read ([`TokenStore::get_for_login`]) is one query joining the record and both
//! cutoffs.
//!
//! # Durability
//! With `synchronous_commit = on` (PostgreSQL's default) a commit is on disk when it returns:
//! every [`Durability::Durable`] write. [`Durability::Lazy`] writes (bookkeeping such as
//! `last_used_at`) run in a transaction with `SET LOCAL synchronous_commit = off`: a crash of
//! the database may lose them, never a token handed to a client nor a revocation.
//!
//! # When the database is away
//! Every operation is bounded ([`PostgresOptions::operation_timeout`]); an unreachable
//! database is a [`StoreError::Backend`], which a FAST login answers with
//! `temporary-auth-failure`. The pool replaces broken connections by itself, so the host
//! recovers without a restart.

mod connect;
mod schema;

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use tokio_postgres::Row;

pub use connect::{PostgresOptions, redact_url};

use super::{
    CasOutcome, ClientKey, ClientRecord, Durability, LoginView, RevocationScope, StoreError,
    TokenStore, Versioned, check_account, codec, fresh_version,
};

/// The account of the global cutoff's row.
const GLOBAL: &str = "";

/// A [`TokenStore`] in PostgreSQL.
pub struct PostgresStore {
    pool: deadpool_postgres::Pool,
    options: PostgresOptions,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.options)
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn i64_of(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidRecord("timestamp or version out of range"))
}

fn u64_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn versioned(version: i64, record: &[u8]) -> Result<Versioned<ClientRecord>, StoreError> {
    Ok(Versioned {
        version: u64_of(version, "version")?,
        value: codec::decode(record)?,
    })
}

fn key_of(row: &Row, account: usize, client: usize) -> Result<ClientKey, StoreError> {
    let hash: &[u8] = row.try_get(client).map_err(StoreError::backend)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("client hash length".into()))?;
    ClientKey::from_parts(row.try_get(account).map_err(StoreError::backend)?, hash)
}

impl PostgresStore {
    /// Connects, and brings the schema up to date (safe when several hosts open at once).
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let config = connect::config(&options)?;
        Self::open_with_config(options, config).await
    }

    /// Like [`PostgresStore::open`], reading `PGUSER`, `PGPASSWORD`, `PGPASSFILE` and `HOME`
    /// from `env` instead of the process environment.
    pub async fn open_with_env(
        options: PostgresOptions,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, StoreError> {
        let config = connect::config_with_env(&options, env)?;
        Self::open_with_config(options, config).await
    }

    async fn open_with_config(
        options: PostgresOptions,
        config: tokio_postgres::Config,
    ) -> Result<Self, StoreError> {
        let pool = connect::pool(&options, config)?;
        let store = PostgresStore { pool, options };
        store
            .bounded(async {
                let mut client = store.client().await?;
                schema::migrate(&mut client).await
            })
            .await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(StoreError::backend)
    }

    /// Runs one operation within the operation timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.options.operation_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::backend(format!(
                "PostgreSQL did not answer within {:?}",
                self.options.operation_timeout
            ))),
        }
    }

    /// One write statement, durable or in a `synchronous_commit = off` transaction.
    async fn write(
        &self,
        durability: Durability,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        match durability {
            Durability::Durable => client
                .execute(sql, params)
                .await
                .map_err(StoreError::backend),
            Durability::Lazy => {
                let tx = client.transaction().await.map_err(StoreError::backend)?;
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await
                    .map_err(StoreError::backend)?;
                let n = tx.execute(sql, params).await.map_err(StoreError::backend)?;
                tx.commit().await.map_err(StoreError::backend)?;
                Ok(n)
            }
        }
    }
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn get(&self, key: &ClientKey) -> Result<Option<Versioned<ClientRecord>>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT version, record FROM fast_clients WHERE account = $1 AND client = $2",
                    &[&key.account(), &&key.client_hash()[..]],
                )
                .await
                .map_err(StoreError::backend)?;
            row.map(|r| versioned(r.get(0), r.get(1))).transpose()
        })
        .await
    }

    async fn get_for_login(&self, key: &ClientKey) -> Result<LoginView, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT c.version, c.record,
                            GREATEST(COALESCE(a.before, 0), COALESCE(g.before, 0))
                     FROM (SELECT 1) AS one
                     LEFT JOIN fast_clients c ON c.account = $1 AND c.client = $2
                     LEFT JOIN fast_cutoffs a ON a.account = $1
                     LEFT JOIN fast_cutoffs g ON g.account = $3",
                    &[&key.account(), &&key.client_hash()[..], &GLOBAL],
                )
                .await
                .map_err(StoreError::backend)?;
            let version: Option<i64> = row.get(0);
            let record: Option<&[u8]> = row.get(1);
            let record = match (version, record) {
                (Some(v), Some(r)) => Some(versioned(v, r)?),
                _ => None,
            };
            Ok(LoginView {
                record,
                revoked_before: u64_of(row.get(2), "cutoff")?,
            })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &ClientKey,
        expected: Option<u64>,
        new: Option<ClientRecord>,
        durability: Durability,
    ) -> Result<CasOutcome, StoreError> {
        let encoded = new.as_ref().map(codec::encode).transpose()?;
        let expires = new
            .as_ref()
            .and_then(ClientRecord::expires_at)
            .map(i64_of)
            .transpose()?;
        let account = key.account();
        let client = &key.client_hash()[..];
        self.bounded(async {
            match (expected, &encoded) {
                (None, Some(record)) => {
                    let version = fresh_version();
                    let n = self
                        .write(
                            durability,
                            "INSERT INTO fast_clients (account, client, version, record, expires_at)
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                            &[&account, &client, &i64_of(version)?, &&record[..], &expires],
                        )
                        .await?;
                    Ok(if n == 1 {
                        CasOutcome::Written(version)
                    } else {
                        CasOutcome::Conflict
                    })
                }
                (Some(v), Some(record)) => {
                    let n = self
                        .write(
                            durability,
                            "UPDATE fast_clients SET version = $4, record = $5, expires_at = $6
                             WHERE account = $1 AND client = $2 AND version = $3",
                            &[
                                &account,
                                &client,
                                &i64_of(v)?,
                                &i64_of(v + 1)?,
                                &&record[..],
                                &expires,
                            ],
                        )
                        .await?;
                    Ok(if n == 1 {
                        CasOutcome::Written(v + 1)
                    } else {
                        CasOutcome::Conflict
                    })
                }
                (Some(v), None) => {
                    let n = self
                        .write(
                            durability,
                            "DELETE FROM fast_clients
                             WHERE account = $1 AND client = $2 AND version = $3",
                            &[&account, &client, &i64_of(v)?],
                        )
                        .await?;
                    Ok(if n == 1 {
                        CasOutcome::Written(0)
                    } else {
                        CasOutcome::Conflict
                    })
                }
                (None, None) => {
                    let client_ = self.client().await?;
                    let exists = client_
                        .query_opt(
                            "SELECT 1 FROM fast_clients WHERE account = $1 AND client = $2",
                            &[&account, &client],
                        )
                        .await
                        .map_err(StoreError::backend)?
                        .is_some();
                    Ok(if exists {
                        CasOutcome::Conflict
                    } else {
                        CasOutcome::Written(0)
                    })
                }
            }
        })
        .await
    }

    async fn clients_of(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(ClientKey, Versioned<ClientRecord>)>, StoreError> {
        check_account(account)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT account, client, version, record FROM fast_clients
                     WHERE account = $1 ORDER BY client LIMIT $2",
                    &[&account, &limit],
                )
                .await
                .map_err(StoreError::backend)?;
            rows.iter()
                .map(|r| Ok((key_of(r, 0, 1)?, versioned(r.get(2), r.get(3))?)))
                .collect()
        })
        .await
    }

    async fn expired(&self, before: u64, limit: usize) -> Result<Vec<ClientKey>, StoreError> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT account, client FROM fast_clients
                     WHERE expires_at IS NOT NULL AND expires_at <= $1
                     ORDER BY expires_at, account, client LIMIT $2",
                    &[&before, &limit],
                )
                .await
                .map_err(StoreError::backend)?;
            rows.iter().map(|r| key_of(r, 0, 1)).collect()
        })
        .await
    }

    async fn remove_account(&self, account: &str) -> Result<usize, StoreError> {
        check_account(account)?;
        self.bounded(async {
            let n = self
                .write(
                    Durability::Durable,
                    "DELETE FROM fast_clients WHERE account = $1",
                    &[&account],
                )
                .await?;
            Ok(n as usize)
        })
        .await
    }

    async fn raise_revocation_cutoff(
        &self,
        scope: RevocationScope,
        before: u64,
    ) -> Result<(), StoreError> {
        let account = match &scope {
            RevocationScope::All => GLOBAL.to_owned(),
            RevocationScope::Account(a) => {
                check_account(a)?;
                a.clone()
            }
        };
        let before = i64_of(before)?;
        self.bounded(async {
            self.write(
                Durability::Durable,
                "INSERT INTO fast_cutoffs (account, before) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE
                 SET before = GREATEST(fast_cutoffs.before, EXCLUDED.before)",
                &[&account, &before],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn revocation_cutoff(&self, account: &str) -> Result<u64, StoreError> {
        check_account(account)?;
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT COALESCE(MAX(before), 0) FROM fast_cutoffs
                     WHERE account = $1 OR account = $2",
                    &[&account, &GLOBAL],
                )
                .await
                .map_err(StoreError::backend)?;
            u64_of(row.get(0), "cutoff")
        })
        .await
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT count(*) FROM fast_clients", &[])
                .await
                .map_err(StoreError::backend)?;
            u64_of(row.get(0), "count")
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // A synchronous commit flushes the WAL up to itself, and so every earlier
        // asynchronous commit too.
        self.bounded(async {
            self.write(
                Durability::Durable,
                "UPDATE fast_schema SET version = version",
                &[],
            )
            .await
            .map(|_| ())
        })
        .await
    }
}
