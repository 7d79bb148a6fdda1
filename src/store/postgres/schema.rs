//! The schema, owned by the store: versioned migrations applied at open, under an advisory
//! lock so two hosts starting at the same moment apply each migration once.

use crate::store::StoreError;

/// Key of the advisory lock that serializes migrations (an arbitrary constant: "FASTTKNS").
const MIGRATION_LOCK: i64 = 0x4641_5354_544b_4e53;

/// The migrations, in order; the schema's version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: records, their expiry index, revocation cutoffs.
    "CREATE TABLE fast_clients (
        account    text   NOT NULL CHECK (octet_length(account) BETWEEN 1 AND 1023),
        client     bytea  NOT NULL CHECK (octet_length(client) = 32),
        version    bigint NOT NULL CHECK (version > 0),
        record     bytea  NOT NULL,
        expires_at bigint,
        PRIMARY KEY (account, client)
    );
    CREATE INDEX fast_clients_expiry ON fast_clients (expires_at) WHERE expires_at IS NOT NULL;
    -- The global cutoff is the row of the empty account, which no client key can have.
    CREATE TABLE fast_cutoffs (
        account text   PRIMARY KEY CHECK (octet_length(account) <= 1023),
        before  bigint NOT NULL
    );",
];

/// The schema version this code needs.
pub(crate) const CURRENT: i32 = MIGRATIONS.len() as i32;

/// Brings the schema to [`CURRENT`]: idempotent, and safe against concurrent openers (each
/// migration runs in the transaction that holds the lock and records it).
pub(crate) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(StoreError::backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS fast_schema (version integer NOT NULL)")
        .await
        .map_err(StoreError::backend)?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM fast_schema", &[])
        .await
        .map_err(StoreError::backend)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO fast_schema (version) VALUES (0)", &[])
                .await
                .map_err(StoreError::backend)?;
            0
        }
    };
    if version > CURRENT {
        return Err(StoreError::backend(format!(
            "the database schema is at version {version}, newer than this build's {CURRENT}: \
             upgrade the host"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(StoreError::backend)?;
        tx.execute("UPDATE fast_schema SET version = $1", &[&(i as i32 + 1)])
            .await
            .map_err(StoreError::backend)?;
    }
    tx.commit().await.map_err(StoreError::backend)
}
