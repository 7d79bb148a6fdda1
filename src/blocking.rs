//! CPU-heavy or blocking work off the async executor: PBKDF2 of a PLAIN password
//! (`sasl2::plain`), opening a sled store (`fast::open`).

/// Runs CPU-heavy or blocking work (PBKDF2, opening a store) off the async executor when a
/// tokio runtime is present. `None` if the task could not complete.
pub(crate) async fn run_blocking<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.spawn_blocking(f).await.ok(),
        Err(_) => Some(f()),
    }
}
